"""One end of a test topology: a network namespace, its veth end and addresses. Plain data,
shared by prove's plans (model/prove.py) and the code that builds the namespaces
(kernel/topology.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Host:
    ns: str          # ip netns name
    dev: str         # its veth end
    addr4: str
    addr6: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.ns}"
