"""Man pages made from the CLI's own help (issue 10, item 8): every command has one, every
option --help shows is in it, man renders it without a warning, and the docs' usage blocks are
--help's own text, so neither can drift from the command."""
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netprobe.commands.cli import cli

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("manpages", ROOT / "scripts" / "manpages.py")
manpages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(manpages)

COMMANDS = sorted(cli.commands)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("man")
    assert manpages.main([str(out)]) == 0
    return out


def rendered(path: Path) -> str:
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                       env={"MANWIDTH": "100", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return re.sub(r"\s+", " ", r.stdout.replace("\u2010", "-").replace("\u2011", "-"))


# man-db comes with `make setup` (scripts/test-deps.sh too); in CI its absence is a failure
needs_man = pytest.mark.skipif(shutil.which("man") is None and not os.environ.get("CI"),
                               reason="man-db not installed")


def test_a_page_for_netprobe_and_each_command(pages):
    assert sorted(p.name for p in pages.iterdir()) == sorted(
        ["netprobe.1", *(f"netprobe-{c}.1" for c in COMMANDS)])


@needs_man
@pytest.mark.parametrize("name", COMMANDS)
def test_every_visible_option_is_in_its_page(pages, name):
    text = rendered(pages / f"netprobe-{name}.1")
    command = cli.commands[name]
    ctx = click.Context(command, info_name=name,
                        parent=click.Context(cli, info_name="netprobe", **cli.context_settings))
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            assert f"--{param.name.replace('_', '-')}" not in text  # hidden stays hidden
            continue
        opts, help_text = record
        assert opts in text
        assert re.sub(r"\s+", " ", help_text) in text
    assert command.get_short_help_str(limit=200) in text


@needs_man
def test_main_page_lists_commands_completion_and_overhead(pages):
    text = rendered(pages / "netprobe.1")
    for c in COMMANDS:
        assert f"netprobe {c}" in text and f"netprobe-{c}(1)" in text
    assert "SHELL COMPLETION" in text and "_NETPROBE_COMPLETE=bash_source netprobe" in text
    overhead = text.split("OVERHEAD", 1)[1]
    assert "0.89 of the rate without probes" in overhead  # docs/OVERHEAD.md's numbers
    assert "<!--" not in overhead


def test_overhead_summary_comes_from_docs():
    summary = manpages.overhead_summary()
    docs = (ROOT / "docs" / "OVERHEAD.md").read_text()
    assert "83 MB" in summary and "83 MB" in docs.split("## Summary", 1)[1]


@pytest.mark.parametrize("doc, command", [("watch.md", "watch"), ("exporter.md", "export")])
def test_docs_usage_block_is_the_help(doc, command):
    text = (ROOT / "docs" / doc).read_text()
    block = re.search(r"```\n(Usage: netprobe .*?)```", text, re.S)[1]
    help_text = CliRunner().invoke(cli, [command, "--help"], prog_name="netprobe",
                                        terminal_width=80).output
    assert block == help_text, "docs/%s: paste `COLUMNS=80 netprobe %s --help`" % (doc, command)


def test_shell_completion_as_documented():
    # the variable the man page and the README give, also when started as `python -m netprobe`
    # (as the launcher does), where click would otherwise guess another name from argv
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT / "pyfront"), COMP_WORDS="netprobe watch --int",
               COMP_CWORD="2", _NETPROBE_COMPLETE="bash_complete")
    r = subprocess.run([sys.executable, "-m", "netprobe"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["plain,--interval"]
