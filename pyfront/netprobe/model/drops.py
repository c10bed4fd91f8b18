"""Naming a dropped sk_buff: its reason from the kernel's BTF, its place from its location.

skb:kfree_skb gives a reason (kernel >= 5.17) and a location (the instruction address that
freed the skb). The reasons' values move between kernels as reasons are added in the middle
of `enum skb_drop_reason`, so their names come from the running kernel's BTF, never a table
here. Since 6.4 a subsystem may send its own reasons with its id in the high bits
(`enum skb_drop_reason_subsys`, masked by SKB_DROP_REASON_SUBSYS_MASK, which the kernel keeps
in the core enum), from an enum of its own: openvswitch's `ovs_drop_reason`, mac80211's
`mac80211_drop_reason`, found in vmlinux or in the module's own BTF.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .btf import BTF, BTFError, VMLINUX_BTF
from .kallsyms import Kallsyms, base_name

CORE_ENUM, SUBSYS_ENUM = "skb_drop_reason", "skb_drop_reason_subsys"
_CORE_PREFIXES = ("SKB_DROP_REASON_", "SKB_")  # SKB_DROP_REASON_NO_SOCKET, SKB_CONSUMED
_SUBSYS_PREFIX = "SKB_DROP_REASON_SUBSYS_"
_MASK = "SKB_DROP_REASON_SUBSYS_MASK"


@dataclass(frozen=True)
class DropReasons:
    """value -> name ("NO_SOCKET", "NETFILTER_DROP", "OVS_DROP_LAST_ACTION") for this kernel"""
    names: Mapping[int, str]
    subsystems: Mapping[int, str] = field(default_factory=dict)  # id -> "OPENVSWITCH"
    subsys_mask: int = 0

    def name(self, value: int) -> str:
        """The reason's name; an unnamed value of a known subsystem reads "OPENVSWITCH:12"."""
        if value in self.names:
            return self.names[value]
        if self.subsys_mask and value & self.subsys_mask:
            shift = _lowest_bit(self.subsys_mask)
            subsys = (value & self.subsys_mask) >> shift
            low = value & ~self.subsys_mask
            return f"{self.subsystems.get(subsys, f'SUBSYS_{subsys}')}:{low}"
        return f"UNKNOWN_{value}"


def _lowest_bit(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _core_name(enumerator: str) -> str:
    for prefix in _CORE_PREFIXES:
        if enumerator.startswith(prefix):
            return enumerator[len(prefix):]
    return enumerator


def _is_sentinel(enumerator: str) -> bool:
    # __OVS_DROP_REASON (the subsystem's base), OVS_DROP_MAX, SKB_DROP_REASON_MAX: never sent
    return enumerator.startswith("__") or enumerator.endswith("_MAX")


def drop_reasons(btf: BTF, extra: Iterable[BTF] = ()) -> DropReasons | None:
    """The reasons this kernel names, from its BTF and (subsystem enums in modules) `extra`
    BTFs; None on kernels before 5.17, whose kfree_skb gives the location only."""
    core = btf.enum_values(CORE_ENUM)
    if core is None:
        return None
    mask = core.get(_MASK, 0)
    names = {v: _core_name(k) for k, v in core.items()
             if not _is_sentinel(k) and not v & mask and k != _MASK}
    subsys_values = btf.enum_values(SUBSYS_ENUM) or {}
    subsystems = {v: k[len(_SUBSYS_PREFIX):] for k, v in subsys_values.items()
                  if k.startswith(_SUBSYS_PREFIX) and not k.endswith("_NUM") and v}
    if mask and subsystems:
        shift = _lowest_bit(mask)
        for source in (btf, *extra):
            for enum in source.enum_names():
                if not enum.endswith("drop_reason") or enum == CORE_ENUM:
                    continue
                for k, v in source.enum_values(enum).items():
                    if (v & mask) >> shift in subsystems and not _is_sentinel(k):
                        names.setdefault(v, k)
    return DropReasons(names, subsystems, mask)


def module_btf_candidates(btf: BTF, btf_dir: Path) -> list[Path]:
    """The module BTFs that may hold subsystem reasons: for SKB_DROP_REASON_SUBSYS_OPENVSWITCH
    the module openvswitch, for ..._MAC80211_UNUSABLE mac80211 (the subsystem's name, or its
    first word), where such a module is loaded."""
    found = []
    for k in (btf.enum_values(SUBSYS_ENUM) or {}):
        sub = k[len(_SUBSYS_PREFIX):].lower()
        for module in dict.fromkeys((sub, sub.split("_")[0])):
            path = btf_dir / module
            if module not in ("core", "num") and path.exists() and path not in found:
                found.append(path)
    return found


def load_drop_reasons(btf: BTF | None = None, btf_path: Path = VMLINUX_BTF) -> DropReasons | None:
    """The running kernel's drop reasons (None: a kernel without them, or without BTF)."""
    if btf is None:
        if not btf_path.exists():
            return None
        btf = BTF.load(btf_path)
    modules = []
    for path in module_btf_candidates(btf, btf_path.parent):
        try:
            modules.append(BTF(path.read_bytes(), base=btf))
        except (OSError, BTFError):
            continue  # a module unloaded meanwhile: its reasons read as "OPENVSWITCH:n"
    return drop_reasons(btf, modules)


@dataclass(frozen=True)
class DropSite:
    """Where an skb was dropped: the function (and module) holding the location, and the
    stage that function belongs to (None: not one of the catalogue's)."""
    function: str
    module: str
    offset: int
    stage: str | None


def drop_site(location: int, kallsyms: Kallsyms, stage_of: Mapping[str, str]) -> DropSite | None:
    """Name a kfree_skb location: its function through /proc/kallsyms, then its stage through
    `stage_of` ({function name: stage name}, from the stage catalogue); gcc's clones
    (.isra.0, .constprop.0, .cold) count as the function they were cloned from."""
    sym = kallsyms.function_at(location)
    if sym is None:
        return None
    return DropSite(sym.name, sym.module, location - sym.addr, stage_of.get(base_name(sym.name)))
