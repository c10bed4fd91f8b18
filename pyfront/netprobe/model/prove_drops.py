"""`netprobe prove`'s fourth case, "where it dies": UDP datagrams sent where they must be
dropped, and the claim that netprobe saw each one die at the device, stage and reason expected.

Pure logic: prove_drops_run.py sends the datagrams and reads the drop counters; the claims and
their wording are tested here without a kernel."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Mapping, Sequence

from .dropcounts import DropKey

CASE_ID = "where_it_dies"


@dataclass(frozen=True)
class DropExpect:
    """Datagrams to `addr` and where each must die."""
    addr: str
    why: str                      # "closed port", "nftables input rule"
    netns: int
    netns_name: str
    ifindex: int
    device: str
    stages: tuple[str, ...]       # the stages it may die at
    reason: str | None            # None: this kernel names no reasons, any will do
    sent: int = 0
    kernel_count: int | None = None  # the kernel's own count of them (nftables' counter)
    error: str = ""               # the datagrams could not be sent, or the rule not made
    by_rule: bool = False         # dropped by prove's nftables rule, whose counter is read


@dataclass(frozen=True)
class DropClaim:
    expect: DropExpect
    holds: bool
    text: str
    seen: tuple[tuple[DropKey, int], ...] = ()  # every drop of the flow, where and how many


@dataclass(frozen=True)
class DropVerdict:
    title: str
    claims: tuple[DropClaim, ...]
    counted_with: str = ""  # the drop stage's mechanism, in words

    @property
    def holds(self) -> bool:
        return bool(self.claims) and all(c.holds for c in self.claims)

    def lines(self, index: int) -> list[str]:
        return case_lines(self, index)

    def as_json(self) -> dict:
        return {"id": CASE_ID, "title": self.title, "expect": "drop", "holds": self.holds,
                "counted_with": self.counted_with,
                "claims": [{
                    "address": c.expect.addr, "holds": c.holds, "text": c.text,
                    "why": c.expect.why, "sent": c.expect.sent,
                    "kernel_count": c.expect.kernel_count, "error": c.expect.error or None,
                    "expected": {"netns": c.expect.netns, "netns_name": c.expect.netns_name,
                                 "device": c.expect.device, "stages": list(c.expect.stages),
                                 "reason": c.expect.reason},
                    "drops": [{"netns": k.netns, "ifindex": k.ifindex, "stage": k.stage,
                               "reason": k.reason, "function": k.function, "packets": n}
                              for k, n in c.seen],
                } for c in self.claims]}


def delta(now: Mapping[DropKey, tuple[int, int]],
          before: Mapping[DropKey, tuple[int, int]]) -> dict[DropKey, int]:
    """The drops between two reads (DropCounts.values), per key; a row deleted in between
    restarts from zero"""
    out = {}
    for k, (p, _) in now.items():
        p0 = before.get(k, (0, 0))[0]
        if (d := p - p0 if p >= p0 else p):
            out[k] = d
    return out


def _where(e: DropExpect) -> str:
    stages = " or ".join(e.stages)
    return f"at {stages} on {e.device}" + ("" if e.netns_name == "root" else f" in {e.netns_name}")


def judge_drop(e: DropExpect, drops: Mapping[DropKey, int],
               device_names: Mapping[tuple[int, int], str] = {}) -> DropClaim:
    """Holds when every datagram sent was seen dropped where expected, for the reason expected
    (and as many as the kernel's own count, where there is one)."""
    seen = tuple(sorted(drops.items(), key=lambda kv: -kv[1]))
    if e.error:
        return DropClaim(e, False, f"{e.addr}: {e.error}", seen)
    where = (lambda k: k.netns == e.netns and k.ifindex == e.ifindex and k.stage in e.stages
             and (e.reason is None or k.reason == e.reason))
    right = [(k, n) for k, n in seen if where(k)]
    got = sum(n for _, n in right)
    fns = ", ".join(dict.fromkeys(k.function for k, _ in right))
    reason = e.reason or "no reason given by this kernel"
    kernel = "" if e.kernel_count is None else f"; nftables counted {e.kernel_count:,}"
    base = f"{e.addr} ({e.why}): {got:,} of {e.sent:,} datagrams dropped {_where(e)}, {reason}"
    if fns:
        base += f" (freed in {fns})"
    if got == e.sent and e.sent and (e.kernel_count is None or e.kernel_count == e.sent):
        return DropClaim(e, True, base + kernel, seen)
    others = [(k, n) for k, n in seen if not where(k)]
    if others:
        base += "; seen instead: " + ", ".join(
            f"{n:,} at {k.stage} on {device_names.get((k.netns, k.ifindex), _dev(k))} "
            f"({k.reason}, {k.function})" for k, n in others[:3])
    return DropClaim(e, False, base + kernel, seen)


def _dev(k: DropKey) -> str:
    return "no device" if k.ifindex == 0 else f"if{k.ifindex}"


def judge(title: str, expects: Sequence[DropExpect], drops: Sequence[Mapping[DropKey, int]],
          device_names: Mapping[tuple[int, int], str] = {}, counted_with: str = "") -> DropVerdict:
    return DropVerdict(title, tuple(judge_drop(e, d, device_names)
                                    for e, d in zip(expects, drops)), counted_with)


def case_lines(v: DropVerdict, index: int) -> list[str]:
    """The case's title, per address where its datagrams died, then the claims."""
    lines = textwrap.wrap(f"{index}. {v.title}", 80, subsequent_indent="   ",
                          break_on_hyphens=False)
    rows = [("to", "dropped on", "stage", "reason", "freed in", "count")]
    for c in v.claims:
        if not c.seen:
            rows.append((c.expect.addr, "(none seen)", "", "", "", "0"))
        for i, (k, n) in enumerate(c.seen):
            dev = c.expect.device if (k.netns, k.ifindex) == (c.expect.netns,
                                                               c.expect.ifindex) else _dev(k)
            rows.append((c.expect.addr if i == 0 else "", dev, k.stage, k.reason, k.function,
                         f"{n:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        lines.append("   " + "  ".join(f"{x:<{w}}" if i < 5 else f"{x:>{w}}"
                                       for i, (x, w) in enumerate(zip(r, widths))).rstrip())
    if v.counted_with:
        lines.append(f"   (drops counted at {v.counted_with})")
    for c in v.claims:
        lines += textwrap.wrap(c.text, 80, initial_indent=f"{'ok' if c.holds else 'FAIL':<5}",
                               subsequent_indent="     ", break_on_hyphens=False)
    return lines
