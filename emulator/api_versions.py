"""Refuse api-versions Azure has not published, and remember which versions the clients sent."""

from __future__ import annotations

import threading
from collections import Counter

from emulator.arm_errors import ArmError
from emulator.catalogue import published_versions
from emulator.state import parse_path


class ApiVersionGate:
    """Checks each ARM call's api-version against `emulator.catalogue.API_VERSIONS` and counts what it saw."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()  # (resource type, api-version) -> calls served
        self.refused: Counter[tuple[str, str]] = Counter()  # (resource type, api-version) -> calls refused
        self._lock = threading.Lock()

    def check(self, path: str, api_version: str, location: str | None) -> None:
        """Raise ARM's 400 when `api_version` is not published for the type `path` names."""
        try:
            rtype = parse_path(path).type
        except ArmError:
            return  # not a resource path: the request path answers it
        published = published_versions(rtype)
        if published is None:
            return
        ok = api_version.lower() in published.versions
        with self._lock:
            (self.seen if ok else self.refused)[(published.type, api_version)] += 1
        if ok:
            return
        # What ARM answers for a version the resource provider does not serve (azure-cli#28496,
        # azure-sdk-for-js#4097, pulumi-azure-nextgen#170): 400 NoRegisteredProviderFound, naming the
        # location, the version, the short type and the supported versions.
        short = published.type.split("/", 1)[-1]
        supported = ", ".join(sorted(published.versions, reverse=True))
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '{(location or 'global').lower()}' and API version "
            f"'{api_version}' for type '{short}'. The supported api-versions are '{supported}'.",
        )

    def report(self) -> dict[str, list[dict[str, object]]]:
        """List the (type, api-version) pairs served and refused, with their call counts."""
        with self._lock:
            return {
                which: [{"type": t, "api_version": v, "calls": n} for (t, v), n in sorted(counts.items())]
                for which, counts in (("seen", self.seen), ("refused", self.refused))
            }
