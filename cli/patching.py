"""Build a JSON Merge Patch (RFC 7396) from `--set PATH=VALUE` arguments over a request as `GET` shows it.

`tags.project=churn` merges into the request's tags. A merge patch replaces a list whole, so a path
through a list element (`compute[1].max_nodes=4`) patches a copy of the request's current list and
sends all of it. The value is JSON when it reads as JSON (a number, true, false, an object, a list),
else text; a field that holds text now, and every tag, stays text; `null` removes the field (or the
list element); `@file.json` reads the value from a JSON file.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

PathPart = str | int
_PIECE = re.compile(r"([^\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


class PatchError(ValueError):
    """A `--set` that cannot be read, or does not fit the request."""


def parse_path(text: str) -> list[PathPart]:
    """Split `compute[1].max_nodes` into `['compute', 1, 'max_nodes']`."""
    parts: list[PathPart] = []
    for piece in text.split("."):
        found = _PIECE.fullmatch(piece)
        if found is None:
            raise PatchError(f"'{text}' is not a path: write names joined by dots, list elements as name[0]")
        parts.append(found.group(1))
        parts += [int(i) for i in _INDEX.findall(found.group(2))]
    return parts


def lookup(document: Any, path: list[PathPart]) -> Any:
    """Return the value at `path` in a JSON document, or None when there is none."""
    node = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return None
            node = node[part]
        else:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
    return node


def parse_value(raw: str, *, path: list[PathPart], current: Any, load: Callable[[str], Any]) -> Any:
    """Read a `--set` value: `@file` as JSON, null, text where text is (tags, a text field), else JSON or text."""
    if raw.startswith("@"):
        return load(raw[1:])
    if raw == "null":
        return None
    under_tags = len(path) >= 2 and path[-2] == "tags"
    if isinstance(current, str) or under_tags:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def split_assignment(text: str) -> tuple[str, str]:
    """Split `PATH=VALUE` at its first '='."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise PatchError(f"'{text}' is not PATH=VALUE (for example tags.project=churn)")
    return path.strip(), value


def apply_set(patch: dict[str, Any], current: dict[str, Any], path: list[PathPart], value: Any, text: str) -> None:
    """Add one assignment to `patch`: objects merge; a list on the way is copied from `current` and edited."""
    if not path or not isinstance(path[0], str):
        raise PatchError(f"'{text}' must start with a field name")
    node: dict[str, Any] = patch
    here: Any = current
    for i, part in enumerate(path):
        assert isinstance(part, str)  # an index always follows a name: handled below
        rest = path[i + 1 :]
        if not rest:
            node[part] = value  # None stays null: the merge patch removes the field
            return
        if isinstance(rest[0], int):
            # The list is sent whole: start from what this patch already holds, else from the request.
            whole = node.get(part)
            if not isinstance(whole, list):
                found = here.get(part) if isinstance(here, dict) else None
                if not isinstance(found, list):
                    raise PatchError(f"'{text}': '{part}' is not a list in the request")
                whole = copy.deepcopy(found)
                node[part] = whole
            _edit(whole, rest, value, text)
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise PatchError(f"'{text}': '{part}' is already set to a value, not an object")
        node = child
        here = here.get(part) if isinstance(here, dict) else None


def _edit(document: Any, path: list[PathPart], value: Any, text: str) -> None:
    """Set (or, for None, remove) the value at `path` inside a list or object taken whole from the request."""
    node = document
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(part, int):
            if not isinstance(node, list):
                raise PatchError(f"'{text}': [{part}] is not in a list")
            if part > len(node) or (part == len(node) and (last and value is None)):
                raise PatchError(f"'{text}': the list has {len(node)} elements; [{len(node)}] adds one")
            if part == len(node):  # one past the end: a new element
                node.append([] if not last and isinstance(path[i + 1], int) else {})
            if last:
                if value is None:
                    del node[part]
                else:
                    node[part] = value
                return
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise PatchError(f"'{text}': '{part}' is not in an object")
            if last:
                if value is None:
                    node.pop(part, None)
                else:
                    node[part] = value
                return
            if node.get(part) is None:
                node[part] = [] if isinstance(path[i + 1], int) else {}
            node = node[part]


def merge_patch_of(
    assignments: list[str], current: dict[str, Any], *, base: dict[str, Any] | None = None, load: Callable[[str], Any]
) -> dict[str, Any]:
    """Build the merge patch that `--set` assignments (in order, over `base`) make of the request `current`."""
    patch: dict[str, Any] = copy.deepcopy(base) if base else {}
    for text in assignments:
        raw_path, raw = split_assignment(text)
        path = parse_path(raw_path)
        # What the field holds now, as this patch has it so far (a list edited by an earlier --set), else as GET shows it.
        now = lookup(patch, path)
        value = parse_value(raw, path=path, current=now if now is not None else lookup(current, path), load=load)
        apply_set(patch, current, path, value, text)
    return patch
