"""The C and the catalogue agree: every offset the C reads is declared in fields.h, every
fn the catalogue names exists in probes/, every STAGE_ macro used is a catalogue stage."""
import re

from netprobe.model import fields
from netprobe.model.catalogue import STAGE_IDS
from netprobe.paths import probes_dir
from netprobe.kernel.program import SOURCES
from netprobe.model.programsets import ALL
from netprobe.kernel.attach import stages_of

PROBES = probes_dir()
HEADERS = ("netprobe.h", "flow_filter.h", "hooks.h", "count.h", "drops.h", "packet.h",
           "latency.h", "device_stages.h")
C = "".join((PROBES / n).read_text() for n in (*HEADERS, *SOURCES))


def defined_programs(c: str) -> set[str]:
    """Programs written out, and those a hooks.h macro makes: NP_TX_HOOKS(trace__, ...) makes
    trace__<name> for each `int P##<name>(` in the macro's body"""
    made = {}
    for m in re.finditer(r"^#define (NP_\w+_HOOKS)\(P,.*?(?=^#define|^/\*|^#endif)", c, re.M | re.S):
        made[m[1]] = re.findall(r"^int P##(\w+)\(", m[0], re.M)
    out = set(re.findall(r"^int (\w+)\(", c, re.M))
    for macro, prefix in re.findall(r"^(NP_\w+_HOOKS)\((\w*),", c, re.M):
        out |= {prefix + name for name in made[macro]}
    return out


def test_every_offset_used_is_declared_and_every_declared_is_used():
    declared = {f.id for f in fields.load_specs(PROBES)}
    used = set(re.findall(r"NP_READ\([^;]*?,\s*(\w+)\)", C)) | set(re.findall(r"OFF_(\w+)", C))
    used.discard("id")  # the OFF_##id in NP_READ's own definition
    assert used - declared == set()
    assert declared - used == set()


def test_catalogue_functions_exist_in_probes():
    # each program set has its program at every hook of the stages it names
    defined = defined_programs(C)
    named = {ps.fn(h) for ps in ALL for s in stages_of([ps]) for c in s.candidates
             for h in c.hooks}
    assert named and named - defined == set()


def test_stage_macros_are_catalogue_stages():
    used = set(re.findall(r"STAGE_(\w+)", C))
    assert used <= set(STAGE_IDS)


def test_no_kernel_headers_outside_the_fallback():
    # a header-free program compiles ~10x faster; only NP_USE_HEADERS (no BTF) may include them
    body = re.sub(r"#ifdef NP_USE_HEADERS.*?#endif", "", C, flags=re.S)
    assert re.findall(r"#include <(linux|net)/", body) == []


def test_every_header_struct_cast_to_is_declared_and_every_declared_is_used():
    # NP_HDR(type, p, STRUCT, base, off) casts to BTF_<STRUCT>, which fields.h's BTF_STRUCT names
    declared = set(re.findall(r"^BTF_STRUCT\(\s*(\w+)", (PROBES / "fields.h").read_text(), re.M))
    # its uses, not packet.h's description and definition of it
    code = re.sub(r"/\*.*?\*/", "", C, flags=re.S)
    used = set(re.findall(r"(?<!#define )NP_HDR\(\w+, \w+, (\w+),", code))
    assert used and used == declared
