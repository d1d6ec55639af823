"""Keep secrets out of everything people and tools read: events, logs, span attributes, error messages.

Two nets, both applied by `redact`:

- patterns for the secrets this service meets: storage and Service Bus keys in connection strings,
  SAS signatures and other credentials in URL query strings (the Functions key `code`, `sig`,
  `token`, `key`, `client_secret`, `access_token`, ...), bearer tokens, Slack tokens and webhook
  URLs, storage account keys;
- the values themselves: settings that are secrets and every callback URL are registered with
  `register` (by the settings loader and by whoever learns them) and replaced wherever they appear.
"""

from __future__ import annotations

import re
import threading

MASK = "***"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # key=value pairs in connection strings and query strings.
    (
        re.compile(
            r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|SharedAccessKeyName|Password|Pwd|"
            r"client_secret|access_token|refresh_token|api[_-]?key|secret|signature|sig|token)"
            r"(\s*[=:]\s*)([^;&\s\"',}]+)"
        ),
        rf"\1\2{MASK}",
    ),
    # Query parameters that carry credentials, wherever a URL or a query string appears (a span's
    # url.query, url.full and http.target, a dependency's URL, a log line): the Functions key `code`,
    # keys, ID tokens and SAS-style signatures. Matched only right after `?`, `&` or at the start of
    # the text, so prose such as "(Code: StorageAccountAlreadyTaken)" is left alone.
    (
        re.compile(
            r"(?i)((?:^|[?&])(?:code|key|id_token|x-functions-key|subscription-key|api[_-]?key|apikey|sig|signature|"
            r"token|access_token|refresh_token|client_secret|secret|password)=)[^&#\s\"'<>]+"
        ),
        rf"\1{MASK}",
    ),
    # Bearer and Basic credentials.
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]+=*"), rf"\1 {MASK}"),
    # Slack: bot, user and app tokens, and incoming-webhook / response URLs (the path is the secret).
    (re.compile(r"\bxox[abeoprs]-[A-Za-z0-9-]+"), f"xox-{MASK}"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), f"xapp-{MASK}"),
    (re.compile(r"(https://hooks\.slack\.com/)[^\s\"'<>]+"), rf"\1{MASK}"),
    # Logic Apps / Teams Workflows trigger URLs carry their signature in the query (sig= above) and
    # their identity in the path.
    (re.compile(r"(https://[\w.-]+\.logic\.azure\.com(?::\d+)?/)[^\s\"'<>]+"), rf"\1{MASK}"),
    (re.compile(r"(https://[\w.-]+\.webhook\.office\.com/)[^\s\"'<>]+"), rf"\1{MASK}"),
    # Storage account keys (64 random bytes, base64) and other long base64 secrets.
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"), MASK),
    # JSON fields that hold keys (listKeys answers).
    (
        re.compile(
            r"(?i)(\"(?:primaryKey|secondaryKey|primaryConnectionString|secondaryConnectionString)\"\s*:\s*\")[^\"]+"
        ),
        rf"\1{MASK}",
    ),
]


class _Known:
    """The secret values registered so far, and one pattern that finds them all."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.lock = threading.Lock()


_known = _Known()


def register(*secrets: str | None) -> None:
    """Remember secret values (8 characters or more) so that they are masked wherever they appear."""
    fresh = {s for s in secrets if s and len(s) >= 8}
    with _known.lock:
        if fresh <= _known.values:
            return
        _known.values.update(fresh)
        ordered = sorted(_known.values, key=len, reverse=True)  # longest first: a secret may contain another
        _known.pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """Return `text` with every secret it holds masked."""
    if not text:
        return text
    known = _known.pattern
    if known is not None:
        text = known.sub(MASK, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_optional(text: str | None) -> str | None:
    """`redact` for optional text."""
    return redact(text) if text else text
