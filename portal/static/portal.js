// Shared by every page: calls of the REST API with the browser's cookie, and small DOM helpers.
// Text always goes in as text (textContent), never as HTML: nothing a request holds can run here.

/** The CSRF token this browser was given (the vending_csrf cookie), sent with every state-changing call. */
export function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("vending_csrf="));
  return found ? decodeURIComponent(found.slice("vending_csrf=".length)) : "";
}

/** A failed call: the problem+json body the API answered (status, title, detail, errors by field). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `the service answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Call the API; answer its JSON, or throw ApiError. Not signed in any more: go to the sign-in page. */
export async function api(path, { method = "GET", body, headers = {}, contentType = "application/json" } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    init.headers["Content-Type"] = contentType;
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { title: "The service cannot be reached", detail: "Check your connection and try again." });
  }
  if (response.status === 401) {
    window.location.assign(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, { title: "Sign in first", detail: "Your sign-in has ended: sign in again." });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { title: `The service answered ${response.status}`, detail: text.slice(0, 300) };
  }
  if (!response.ok) {
    const problem = data || { title: `The service answered ${response.status}` };
    if (response.headers.get("Retry-After")) problem.retry_after = Number(response.headers.get("Retry-After"));
    throw new ApiError(response.status, problem);
  }
  return data;
}

/** Build an element: el("p", {class: "x"}, "text", child). Strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Say a status in words, in a badge whose colour repeats what the words say. */
export function badge(status) {
  return el("span", { class: `badge s-${status}` }, status.replaceAll("_", " "));
}

/** A time, as the reader's clock shows it. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** Money, as the policy's price table gives it. */
export function money(amount, currency) {
  return `${currency} ${Number(amount).toLocaleString(undefined, { maximumFractionDigits: 0 })}`;
}

/** Show what went wrong in `box` (a role=alert element): the problem's title, detail and each listed error. */
export function showProblem(box, err) {
  const problem = err instanceof ApiError ? err.problem : { title: "Something went wrong", detail: String(err) };
  box.replaceChildren(
    el("h2", {}, problem.title || "Something went wrong"),
    problem.detail ? el("p", {}, problem.detail) : null,
    problem.errors && problem.errors.length
      ? el("ul", {}, problem.errors.map((e) => el("li", {}, `${e.field}: ${e.message}`)))
      : null,
    problem.rule ? el("p", { class: "muted" }, `Rule: ${problem.rule}`) : null,
  );
  box.hidden = false;
  box.focus();
}

/** The request a page is about (its id from the page's data attribute). */
export function pageData(name) {
  return document.getElementById("main").dataset[name] || "";
}
