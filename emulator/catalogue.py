"""What the emulated regions offer: VM sizes (family, vCPUs) and default quotas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    """A VM size as quota sees it."""

    family: str
    vcpus: int


VM_SIZES = {
    k.lower(): v
    for k, v in {
        "Standard_DS2_v2": VmSize("standardDSv2Family", 2),
        "Standard_DS3_v2": VmSize("standardDSv2Family", 4),
        "Standard_DS4_v2": VmSize("standardDSv2Family", 8),
        "Standard_DS5_v2": VmSize("standardDSv2Family", 16),
        "Standard_D4s_v5": VmSize("standardDSv5Family", 4),
        "Standard_D16s_v5": VmSize("standardDSv5Family", 16),
        "Standard_E8s_v5": VmSize("standardESv5Family", 8),
        "Standard_NC6s_v3": VmSize("standardNCSv3Family", 6),
        "Standard_NC12s_v3": VmSize("standardNCSv3Family", 12),
        "Standard_NC24ads_A100_v4": VmSize("standardNCADSA100v4Family", 24),
    }.items()
}

FAMILY_NAMES = {
    "standardDSv2Family": "Standard DSv2 Family Cluster Dedicated vCPUs",
    "standardDSv5Family": "Standard DSv5 Family Cluster Dedicated vCPUs",
    "standardESv5Family": "Standard ESv5 Family Cluster Dedicated vCPUs",
    "standardNCSv3Family": "Standard NCSv3 Family Cluster Dedicated vCPUs",
    "standardNCADSA100v4Family": "Standard NCADS_A100_v4 Family Cluster Dedicated vCPUs",
}

DEFAULT_FAMILY_LIMIT = 1000  # generous, so a devhost serves many teams; tests and scenarios set real limits
DEFAULT_LOW_PRIORITY_LIMIT = 1000
