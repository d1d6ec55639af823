// Pure helpers of the edit form: what a change is, as a JSON Merge Patch (RFC 7396). No DOM here,
// so that tests/unit/test_portal_patch.py runs them under node against the service's own merge.

/** JSON with every object's keys in order: two values are the same when these are. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** RFC 7396: the patch that turns `from` into `to` (objects merge, null removes, lists are replaced). */
export function mergePatch(from, to) {
  const patch = {};
  for (const key of Object.keys(from)) {
    if (!(key in to)) patch[key] = null;
  }
  for (const [key, value] of Object.entries(to)) {
    const old = from[key];
    const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    if (isObject(value) && isObject(old)) {
      const inner = mergePatch(old, value);
      if (Object.keys(inner).length) patch[key] = inner;
    } else if (canonical(value) !== canonical(old)) {
      patch[key] = value;
    }
  }
  return patch;
}

/** The request without what it leaves unset: nulls, and objects that hold nothing else. */
export function compact(value) {
  if (Array.isArray(value)) return value.map(compact);
  if (value === null || typeof value !== "object") return value;
  const out = {};
  for (const [key, inner] of Object.entries(value)) {
    const kept = compact(inner);
    if (kept === null || kept === undefined) continue;
    if (typeof kept === "object" && !Array.isArray(kept) && Object.keys(kept).length === 0) continue;
    out[key] = kept;
  }
  return out;
}
