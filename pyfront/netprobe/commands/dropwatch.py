"""The drops section of `netprobe watch`: each interval, the session's drop counters and every
namespace's device counters, read and kept for the next interval's rates."""
from __future__ import annotations

from ..kernel import linkstats
from ..render.dropreport import drop_lines, drops_json, link_lines
from ..render.report import DeviceSelector
from ..model.stagestate import unavailable
from ..model.catalogue import BY_NAME


class DropWatch:
    def __init__(self, session, selector: DeviceSelector = DeviceSelector()):
        self.session = session
        self.selector = selector
        self.state = session.states.get("drop") or unavailable(BY_NAME["drop"])
        self._before = session.read_drops()
        self._links_before = linkstats.read(session.namespaces.values())
        self.lines, self.links, self.lost, self._link_errors = [], [], 0, {}

    def update(self, seconds: float, names) -> None:
        s = self.session
        now = s.read_drops()
        links = linkstats.read(s.namespaces.values())
        self.lines = drop_lines(now, self._before, seconds, s.devices, names, self.selector)
        self.links = link_lines(links, self._links_before, seconds, names, self.selector)
        self.lost, self._link_errors = now.lost, links.errors
        self._before, self._links_before = now, links

    def json(self) -> dict:
        return drops_json(self.lines, self.links, state=self.state,
                          reasons=self.session.drops_reasons, lost=self.lost,
                          link_errors=self._link_errors)

    def render(self):
        from ..render.dropview import render_drops

        return render_drops(self.lines, self.links, reasons=self.session.drops_reasons,
                            lost=self.lost, attached=self.state.attached,
                            describe=self.state.describe())
