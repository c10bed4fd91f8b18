"""What became of each stage at attach time, as values: the mechanism it runs on and where, or
why none could run it, and which better mechanisms were passed over or failed on the way.

Code decides on these fields (`attached`, `mechanism`); words are made from them only where a
person reads them (`describe`, by the view, the JSON, the exporter and `prove`)."""
from __future__ import annotations

from dataclasses import dataclass

from .catalogue import NDO_START_XMIT, Stage


@dataclass(frozen=True)
class Refusal:
    """A mechanism a stage did not get, and why: the kernel lacks it or its targets (passed
    over while choosing), or it was chosen and the kernel refused to attach it (fell back)."""
    mechanism: str
    why: str

    def __str__(self) -> str:
        return f"{self.mechanism}: {self.why}"


@dataclass(frozen=True)
class StageState:
    stage: Stage
    mechanism: str | None                 # None: no mechanism could reach this stage
    targets: tuple[str, ...] = ()         # symbols, "category:event", "ipv4:POST_ROUTING"
    per_device_xmit: bool = False         # kprobes that follow each device's ndo_start_xmit
    passed_over: tuple[Refusal, ...] = ()
    fell_back_from: tuple[Refusal, ...] = ()
    note: str = ""                        # what the chosen mechanism sees, in words

    @property
    def attached(self) -> bool:
        return self.mechanism is not None

    @property
    def name(self) -> str:
        return self.stage.name

    def describe(self) -> str:
        """'tp_btf net:net_dev_queue', 'kprobe on each device's ndo_start_xmit: veth_xmit',
        'unavailable (kprobe: ...; raw_tracepoint: ...)'"""
        if self.mechanism is None:
            return "unavailable (" + "; ".join(map(str, self.passed_over + self.fell_back_from)) + ")"
        text = ", ".join(dict.fromkeys(t for t in self.targets if t != NDO_START_XMIT))
        if self.per_device_xmit:
            text = "on each device's ndo_start_xmit" + (f": {text}" if text else "")
        fell = "; ".join(map(str, self.fell_back_from))
        return f"{self.mechanism} {text}" + (f" (fell back from {fell})" if fell else "")


def to_json(state: StageState) -> dict:
    """A stage's state for --json, ready files and prove's report: the bare mechanism (null
    when unavailable) and the words apart."""
    return {"name": state.name, "layer": state.stage.layer, "direction": state.stage.direction,
            "mechanism": state.mechanism, "attached": state.attached,
            "targets": [t for t in state.targets if t != "<ndo_start_xmit>"],
            "description": state.describe(),
            "passed_over": [str(r) for r in state.passed_over],
            "fell_back_from": [str(r) for r in state.fell_back_from]}


def unavailable(stage: Stage) -> StageState:
    """A stage not in this session at all (another program set, a --stage subset)"""
    return StageState(stage, None, passed_over=(Refusal("none", "not attached by this command"),))
