"""`netprobe doctor`: what this machine offers, proven by really loading and attaching."""
from __future__ import annotations

import json
import os
import platform
import sys
import textwrap
from dataclasses import dataclass

from ..kernel import bpfsys
from ..model.catalogue import BY_NAME, FENTRY, KPROBE, NETFILTER, RAW_TRACEPOINT, STAGES, TP_BTF
from ..errors import NetprobeError, one_line
from ..kernel.facts import HEADER_CASTS, Kernel, headers_release, kernel_version, tracefs
from ..model.plan import choose

# tiny programs, one per mechanism; each is attached once and detached at once
_TRIAL_C = r"""
struct np_nf_ctx { void *state; void *skb; };
int trial_kprobe(struct pt_regs *ctx) { return 0; }
int trial_raw_tp(struct bpf_raw_tracepoint_args *ctx) { return 0; }
int trial_tp_btf(struct bpf_raw_tracepoint_args *ctx) { return 0; }
int trial_tp(void *ctx) { return 0; }
int trial_nf(struct np_nf_ctx *ctx) { return 1; }
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _trial(label, fn) -> Check:
    try:
        return Check(label, True, fn() or "works")
    except Exception as e:  # BCC raises bare Exception; OSError from our own syscalls
        why = getattr(e, "strerror", None) or (one_line(e) if str(e).strip() else "")
        return Check(label, False, why)


def mechanism_checks(kernel: Kernel) -> list[Check]:
    from bcc import BPF

    checks = []
    try:
        b = BPF(text="#include <uapi/linux/ptrace.h>\n" + _TRIAL_C)
    except Exception as e:
        return [Check("BPF compile", False, f"BCC could not compile a trivial program: {e}")]
    try:
        sym = kernel.kprobe_symbol("tcp_sendmsg") or "tcp_sendmsg"

        def kprobe():
            if not kernel.kprobes:
                raise NetprobeError("kernel built without CONFIG_KPROBES (no kprobe PMU, no kprobe_events)")
            b.attach_kprobe(event=sym, fn_name="trial_kprobe")
            b.detach_kprobe(event=sym)
        checks.append(_trial("kprobe", kprobe))

        def fentry():
            # the trial watch and export make too (an empty program loaded and attached):
            # doctor says what they would decide, and why
            if not kernel.fentry:
                raise NetprobeError(kernel.refused[FENTRY])
        checks.append(_trial("fentry", fentry))

        def tracepoint():
            if tracefs() is None:
                raise NetprobeError("tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)")
            b.attach_tracepoint(tp="net:net_dev_queue", fn_name="trial_tp")
            b.detach_tracepoint(tp="net:net_dev_queue")
        checks.append(_trial("tracepoint", tracepoint))

        def raw_tp():
            b.attach_raw_tracepoint(tp="net_dev_queue", fn_name="trial_raw_tp")
            b.detach_raw_tracepoint(tp="net_dev_queue")
        checks.append(_trial("raw_tracepoint", raw_tp))

        def tp_btf():
            btf_id = kernel.tracepoint_btf_id("net:net_dev_queue")
            if not btf_id:
                raise NetprobeError("needs the kernel's BTF (/sys/kernel/btf/vmlinux)")
            prog = bpfsys.load_tp_btf(b.dump_func("trial_tp_btf"), "trial_tp_btf", btf_id)
            try:
                os.close(bpfsys.raw_tracepoint_open(prog))
            finally:
                os.close(prog)
        checks.append(_trial("tp_btf", tp_btf))

        def netfilter():
            if kernel_version() < (6, 4):
                raise NetprobeError("needs kernel >= 6.4")
            fn = b.load_func("trial_nf", bpfsys.BPF_PROG_TYPE_NETFILTER, None, bpfsys.BPF_NETFILTER)
            os.close(bpfsys.netfilter_link(fn.fd, "ipv4", "LOCAL_IN"))
        checks.append(_trial("netfilter", netfilter))
    finally:
        b.cleanup()
    return checks


class _Proven:
    """KernelFacts whose mechanisms are the ones proven to work."""

    def __init__(self, kernel: Kernel, mechanisms: set[str]):
        self._k, self.mechanisms = kernel, frozenset(mechanisms)

    def __getattr__(self, name):
        return getattr(self._k, name)


def run_doctor(as_json: bool = False) -> int:
    kernel = Kernel()
    facts: list[Check] = []
    arch_ok = platform.machine() in bpfsys.SYSCALLS
    facts.append(Check("kernel", arch_ok, f"{platform.release()} ({platform.machine()})" + (
        "" if arch_ok else f": netprobe knows the system calls of {', '.join(bpfsys.SYSCALLS)} only")))
    root = os.geteuid() == 0
    facts.append(Check("root", root, "yes" if root else "no: run `sudo netprobe doctor`"))
    btf_ok = kernel.btf_path.exists()
    facts.append(Check("BTF", btf_ok, str(kernel.btf_path) if btf_ok else
                       f"absent ({kernel.btf_path})"))
    made_for = headers_release(kernel.build)
    hdr = kernel.build.resolve() if kernel.build.exists() else None
    if hdr is None:
        headers = f"missing ({kernel.build}): `make setup` installs them"
    elif made_for is None:
        headers = f"{hdr} (no include/generated/utsrelease.h: which kernel's is unknown)"
    elif made_for == platform.release():
        headers = f"{hdr}"
    elif btf_ok:
        headers = f"{hdr} (another kernel's, {made_for}: for compiling only; layouts come from BTF)"
    else:
        headers = f"{hdr} (another kernel's, {made_for}: its struct layouts are not this kernel's)"
    facts.append(Check("kernel headers", hdr is not None, headers))
    layouts = kernel.layouts()
    facts.append(Check("struct layouts", layouts.trusted,
                       f"from {layouts.source}" if layouts.trusted else "cannot be trusted"))
    if root and arch_ok:
        # how the probes read a packet's headers (the flow filter, --sample): not an attach
        # mechanism, and both ways work; in place is cheaper
        facts.append(Check("header reads", True, "in place (bpf_rdonly_cast kfunc)"
                           if kernel.header_casts else "copied (bpf_probe_read_kernel): "
                           + kernel.refused.get(HEADER_CASTS, "")))
    tf = tracefs()
    facts.append(Check("tracefs", tf is not None, str(tf) if tf else
                       "not mounted: mount -t tracefs tracefs /sys/kernel/tracing" if root else
                       "not readable without root"))
    try:
        import bcc  # noqa: F401
        facts.append(Check("BCC", True, f"python3-bpfcc {getattr(bcc, '__version__', '')}".strip()))
        have_bcc = True
    except ImportError:
        facts.append(Check("BCC", False, "not importable: `make setup` (apt install python3-bpfcc)"))
        have_bcc = False

    mech: list[Check] = []
    if arch_ok and root and have_bcc and (btf_ok or hdr):
        mech = mechanism_checks(kernel)
    proven = {c.name for c in mech if c.ok} & {FENTRY, KPROBE, TP_BTF, RAW_TRACEPOINT, NETFILTER}
    choices = ([choose(s, _Proven(kernel, proven)) for s in (*STAGES, BY_NAME["drop"])]
               if mech else [])
    if btf_ok:
        reasons = kernel.drop_reasons
        facts.append(Check("drop reasons", reasons is not None,
                           f"{len(reasons.names)} named from BTF (enum skb_drop_reason)"
                           if reasons else "none on this kernel (before 5.17): drops by place only"))
    usable = layouts.trusted and any(c.available for c in choices)

    if as_json:
        print(json.dumps({
            "facts": [c.__dict__ for c in facts], "mechanisms": [c.__dict__ for c in mech],
            "stages": [{"stage": c.stage.name, "layer": c.stage.layer,
                        "direction": c.stage.direction, "mechanism": c.describe(),
                        "passed_over": [str(r) for r in c.passed_over]}
                       for c in choices],
            "usable": usable}, indent=2))
    else:
        def line(c: Check):
            print(f"  {'ok ' if c.ok else 'NO '} {c.name:<15} {c.detail}")
        print("machine")
        for c in facts:
            line(c)
        if mech:
            print("attach mechanisms (each really loaded and attached)")
            for c in mech:
                line(c)
            print("stages: mechanism this kernel would use")
            for c in choices:
                print(f"  {c.stage.name:<18} {c.stage.layer:<6} {c.stage.direction}  {c.describe()}")
            # the better mechanisms the stages did not get, each reason once with its stages
            better: dict[str, list[str]] = {}
            for c in choices:
                for r in c.passed_over if c.available else ():
                    better.setdefault(str(r), []).append(c.stage.name)
            if better:
                print("passed over (better mechanisms first)")
                for why, names in better.items():
                    print(textwrap.fill(why, 78, initial_indent="  ", subsequent_indent="    "))
                    print(textwrap.fill("at " + ", ".join(names), 78, initial_indent="      ",
                                        subsequent_indent="         "))
    if not usable:
        # on stderr: stdout stays one JSON document with --json
        if not arch_ok:
            why = "nothing usable found: an architecture netprobe does not support"
        elif not root:
            why = "doctor loads and attaches BPF programs and needs root: run it with sudo"
        elif not layouts.trusted:
            why = f"nothing usable found: {layouts.why}"
        elif not have_bcc or not (btf_ok or hdr):
            why = "nothing usable found: install BCC and headers: sudo make setup"
        else:
            why = ("nothing usable found: this kernel allows no kprobes, raw tracepoints or "
                   "netfilter links for BPF")
        print(f"netprobe: {why}", file=sys.stderr)
        return 1
    return 0
