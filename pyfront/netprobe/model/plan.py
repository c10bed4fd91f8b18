"""Choosing, per stage, the best mechanism this kernel allows. Pure logic: the kernel's answers
come in through a KernelFacts object, so the choice is tested without root."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .catalogue import (FENTRY, KPROBE, NDO_START_XMIT, NETFILTER, RAW_TRACEPOINT, TP_BTF,
                        Candidate, Hook, Stage)
from .stagestate import Refusal, StageState


class KernelFacts(Protocol):
    mechanisms: frozenset[str]  # the attach mechanisms that work here
    # why a mechanism this kernel has in principle does not work here (a trial refused)
    refused: dict[str, str]

    def kprobe_symbol(self, function: str) -> str | None: ...
    def fentry_function(self, function: str) -> bool: ...
    def tracepoint_exists(self, name: str) -> bool: ...
    def first_param(self, function: str) -> str | None: ...


@dataclass(frozen=True)
class Attach:
    """A resolved hook: mechanism, concrete target (symbol, tracepoint, netfilter hook), fn."""
    mechanism: str
    target: str
    fn: str


@dataclass
class Choice:
    stage: Stage
    candidate: Candidate | None
    attaches: list[Attach] = field(default_factory=list)
    # why better candidates were passed over, in order
    passed_over: list[Refusal] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.candidate is not None

    def state(self, fell_back_from: tuple[Refusal, ...] = ()) -> StageState:
        """The stage as it stands once this choice is attached (or found unavailable)."""
        if self.candidate is None:
            return StageState(self.stage, None, passed_over=tuple(self.passed_over),
                              fell_back_from=fell_back_from)
        return StageState(self.stage, self.candidate.mechanism,
                          tuple(a.target for a in self.attaches),
                          any(a.target == NDO_START_XMIT for a in self.attaches),
                          tuple(self.passed_over), fell_back_from, self.candidate.note)

    def describe(self) -> str:
        return self.state().describe()


def resolve(hook: Hook, mechanism: str, facts: KernelFacts) -> tuple[str | None, str]:
    """(target, '') or (None, why)"""
    if mechanism in (KPROBE, FENTRY):
        if hook.targets == (NDO_START_XMIT,):
            return NDO_START_XMIT, ""
        why = f"no kernel function {' / '.join(hook.targets)} (inlined or absent)"
        for name in hook.targets:
            sym = facts.kprobe_symbol(name)
            if sym is None:
                continue
            # a trampoline attaches by the function's BTF id and its exact symbol: a function
            # only present as a gcc clone (ip_rcv_core.isra.0) or absent from BTF has none
            if mechanism == FENTRY and (sym != name or not facts.fentry_function(name)):
                why = f"{name}() has no BTF function of that exact name to attach to"
                continue
            if hook.first_param and facts.first_param(name) not in (hook.first_param, None):
                return None, f"{name}() takes {facts.first_param(name)}, not {hook.first_param}"
            return sym, ""
        return None, why
    if mechanism in (RAW_TRACEPOINT, TP_BTF):
        for tp in hook.targets:
            if facts.tracepoint_exists(tp):
                return tp, ""
        return None, f"no tracepoint {' / '.join(hook.targets)}"
    if mechanism == NETFILTER:
        return hook.targets[0], ""
    return None, f"unknown mechanism {mechanism}"


def choose(stage: Stage, facts: KernelFacts, prefer: Sequence[str] = ()) -> Choice:
    order = sorted(stage.candidates,
                   key=lambda c: prefer.index(c.mechanism) if c.mechanism in prefer else len(prefer))
    choice = Choice(stage, None)
    for cand in order:
        if cand.mechanism not in facts.mechanisms:
            why = Refusal(cand.mechanism,
                          facts.refused.get(cand.mechanism, "not usable on this kernel"))
            if why not in choice.passed_over:
                choice.passed_over.append(why)
            continue
        attaches, missing = [], None
        for hook in cand.hooks:
            target, why = resolve(hook, cand.mechanism, facts)
            if target is None:
                if not hook.optional:
                    missing = why
                    break
                continue
            attaches.append(Attach(cand.mechanism, target, hook.fn))
        if missing:
            choice.passed_over.append(Refusal(cand.mechanism, missing))
            continue
        choice.candidate, choice.attaches = cand, attaches
        return choice
    return choice


def choose_all(stages: Sequence[Stage], facts: KernelFacts,
               prefer: Sequence[str] = ()) -> list[Choice]:
    return [choose(s, facts, prefer) for s in stages]
