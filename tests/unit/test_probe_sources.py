"""The C and the catalogue agree: every offset the C reads is declared in fields.h, every
fn the catalogue names exists in probes/, every STAGE_ macro used is a catalogue stage."""
import re

from netprobe import fields
from netprobe.catalogue import ALL_STAGES, STAGE_IDS
from netprobe.paths import probes_dir
from netprobe.program import SOURCES

PROBES = probes_dir()
C = "".join((PROBES / n).read_text()
            for n in ("netprobe.h", "flow_filter.h", "count.h", "hooks.h", *SOURCES))


def test_every_offset_used_is_declared_and_every_declared_is_used():
    declared = {f.id for f in fields.load_specs(PROBES)}
    used = set(re.findall(r"NP_READ\([^;]*?,\s*(\w+)\)", C)) | set(re.findall(r"OFF_(\w+)", C))
    used.discard("id")  # the OFF_##id in NP_READ's own definition
    assert used - declared == set()
    assert declared - used == set()


def test_catalogue_functions_exist_in_probes():
    # hooks.h writes a stage's programs once, as int P##<fn>(...), for each feature's prefix
    defined = set(re.findall(r"^int (?:P##)?(\w+)\(", C, re.M))
    named = {h.fn for s in ALL_STAGES for c in s.candidates for h in c.hooks}
    assert named - defined == set()


def test_stage_macros_are_catalogue_stages():
    used = set(re.findall(r"STAGE_(\w+)", C))
    assert used <= set(STAGE_IDS)


def test_no_kernel_headers_outside_the_fallback():
    # a header-free program compiles ~10x faster; only NP_USE_HEADERS (no BTF) may include them
    body = re.sub(r"#ifdef NP_USE_HEADERS.*?#endif", "", C, flags=re.S)
    assert re.findall(r"#include <(linux|net)/", body) == []
