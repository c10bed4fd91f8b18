"""packaging/ and docs/exporter.md against what the exporter really emits: every dashboard
query and alert uses only emitted metrics and parses as PromQL; the rules pass their own
tests; the systemd unit keeps what BPF needs and nothing it must not have."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from netprobe.render.exporter import DEFAULT_LISTEN, DEFAULT_PORT, METRICS
from netprobe.render.latexport import LATENCY_METRICS

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
DASHBOARD = PACKAGING / "grafana" / "netprobe-dashboard.json"
RULES = PACKAGING / "prometheus" / "netprobe-alerts.yml"
UNIT = PACKAGING / "systemd" / "netprobe-exporter.service"
DOCS = ROOT / "docs" / "exporter.md"

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"),
                                    reason="promtool (Debian: prometheus) not installed")


def emitted_names() -> set[str]:
    """netprobe's own metrics plus the process_* ones the exporter registers."""
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    process = {line.split()[2] for line in generate_latest(reg).decode().splitlines()
               if line.startswith("# TYPE")}
    assert "process_cpu_seconds_total" in process
    # a histogram is read through its _bucket, _sum and _count series
    latency = {m.name + suffix for m in LATENCY_METRICS
               for suffix in (("_bucket", "_sum", "_count") if m.kind == "histogram" else ("",))}
    return {m.name for m in METRICS} | latency | process


_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, label matchers,
    durations and grouping labels removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = _GROUPING.sub("", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    exprs = [t["expr"] for p in walk(d["panels"]) for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, q
            exprs.append(m.group(1))
    return exprs


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by what they stand for, so Prometheus can parse it."""
    for var, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$__interval", "15s")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


@pytest.mark.parametrize("expr, names", [
    ('sum by (netns) (rate(netprobe_skbs_total{netstage="x"}[$__rate_interval]))', {"netprobe_skbs_total"}),
    ('a * on (instance, job) group_left (kind) b{x=~"$d"}', {"a", "b"}),
    ('rate(x[5m]) and on (instance) y', {"x", "y"}),
    ('sum(increase(m_total{i=~"$instance"}[$__range])) / 2', {"m_total"}),
])
def test_metric_names_reads_promql(expr, names):
    assert metric_names(expr) == names


def test_dashboard_uses_only_emitted_metrics():
    emitted = emitted_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    used = set()
    for e in exprs:
        names = metric_names(e)
        assert names, f"no metric in {e!r}"
        assert names <= emitted, f"{e!r} uses {names - emitted}"
        used |= names
    # the dashboard shows the counters, the join, attach status and the exporter's health
    assert {"netprobe_skbs_total", "netprobe_skb_bytes_total", "netprobe_l4_send_calls_total",
            "netprobe_device_info", "netprobe_stage_attached", "netprobe_map_full_drops_total",
            "netprobe_map_read_errors_total", "netprobe_scrape_duration_seconds",
            "netprobe_netns_unprobed", "netprobe_stage_latency_seconds_bucket",
            "netprobe_path_latency_seconds_bucket", "netprobe_paths_total"} <= used


def test_dashboard_panels_are_wired_to_the_datasource_variable():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    assert "datasource" in {v["name"] for v in d["templating"]["list"]}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["refId"] for t in p["targets"]), p["title"]
        # the per-device counters are many series: every panel aggregates them
        for t in p["targets"]:
            if "netprobe_skb" in t["expr"] or "netprobe_l4_send" in t["expr"]:
                assert t["expr"].startswith("sum"), t["expr"]


@needs_promtool
def test_dashboard_queries_parse_as_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": as_promql(e)} for i, e in enumerate(dashboard_exprs())]}]}
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(json.dumps(rules))  # JSON is YAML
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_alert_rules_check_and_pass_their_tests():
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "test", "rules", "netprobe-alerts.test.yml"], cwd=RULES.parent,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_use_only_emitted_metrics():
    exprs = re.findall(r"^\s+expr: (.+)$", RULES.read_text(), re.M)
    assert exprs
    for e in exprs:
        assert metric_names(e) <= emitted_names() | {"up"}, e
    assert any("netprobe_stage_attached == 0" in e for e in exprs)


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_allows_bpf_and_little_else():
    s = unit_settings()
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                    "CAP_SYSLOG"}
    assert s["ExecStart"] == ["/usr/local/bin/netprobe export $NETPROBE_EXPORT_ARGS"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["RestrictNamespaces"] == ["net"]
    assert "bpf" in s["SystemCallFilter"][0].split()
    assert s["IPAddressDeny"] == ["any"] and s["IPAddressAllow"] == ["localhost"]
    # each of these would break netprobe: no host namespaces, no /proc/PID/ns, no tracefs
    for key in ("PrivateNetwork", "ProtectProc", "ProcSubset", "ProtectKernelTunables",
                "PrivateUsers", "User", "DynamicUser"):
        assert key not in s, key


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = tmp_path / UNIT.name
    # verify also checks that ExecStart's binary exists; stand one in where netprobe is not installed
    text = UNIT.read_text()
    if not Path("/usr/local/bin/netprobe").exists():
        text = text.replace("/usr/local/bin/netprobe", "/bin/true")
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_docs_list_every_metric_and_the_default_port():
    text = DOCS.read_text()
    for m in (*METRICS, *LATENCY_METRICS):
        assert f"`{m.name}`" in text, m.name
    assert DEFAULT_LISTEN in text and str(DEFAULT_PORT) in text


@needs_promtool
def test_docs_scrape_config_is_a_valid_prometheus_config(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    config = next(b for b in blocks if "scrape_configs:" in b)
    f = tmp_path / "prometheus.yml"
    f.write_text(config)
    r = subprocess.run(["promtool", "check", "config", "--syntax-only", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
