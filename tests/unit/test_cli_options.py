"""Every option is checked while the command line is parsed: bad input is one line and exit 2,
and nothing is compiled, loaded or attached (issue 10, item 14 and the --once part of 16).
The shared options are one definition used by every command (issue 9)."""
import json

import click
import pytest
from click.testing import CliRunner

from netprobe.commands import cli as cli_module
from netprobe.commands import cli_options
from netprobe.commands.cli import cli


@pytest.fixture
def started(monkeypatch):
    """What the commands would have started: nothing, when the input is bad."""
    calls = []
    monkeypatch.setattr("netprobe.commands.watch.run_watch",
                        lambda **kw: calls.append(("watch", kw)))
    monkeypatch.setattr("netprobe.commands.export_server.run_export",
                        lambda **kw: calls.append(("export", kw)))
    monkeypatch.setattr("netprobe.commands.prove_cli._prove",
                        lambda *a: calls.append(("prove", a)) or 0)
    monkeypatch.setattr("netprobe.commands.cli_options.sigterm_unwinds", lambda: None)
    monkeypatch.setattr("netprobe.commands.cli.sigterm_unwinds", lambda: None)
    monkeypatch.setattr("netprobe.commands.export_cli.sigterm_unwinds", lambda: None)
    monkeypatch.setattr("netprobe.commands.prove_cli.sigterm_unwinds", lambda: None)
    return calls


def run(*args):
    return CliRunner(mix_stderr=False).invoke(cli, list(args))


def one_error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.stderr
    return lines[-1]


@pytest.mark.parametrize("args, needle", [
    (["--interval", "nan"], "'-i' / '--interval': nan is not a number of seconds from 0.1 to 86400"),
    (["--interval", "inf"], "inf is not a number of seconds from 0.1 to 86400"),
    (["--interval", "1e308"], "1e308 is not a number of seconds from 0.1 to 86400"),
    (["--interval", "0"], "0 is not a number of seconds from 0.1"),
    (["--interval", "-1"], "-1 is not a number of seconds from 0.1"),
    (["--interval", "soon"], "'soon' is not a number of seconds"),
    (["--duration", "nan"], "'-d' / '--duration': nan is not a number of seconds from 0.1 to 3.16224e+07"),
    (["--duration", "-inf"], "-inf is not a number of seconds"),
    (["--duration", "1e308"], "1e308 is not a number of seconds"),
    (["--once", "--count", "3"], "--once is one interval: it does not go with --count or --duration"),
    (["--once", "--duration", "2"], "--once is one interval: it does not go with --count or --duration"),
    (["--ready-file", "/nonexistent/dir/ready"], "cannot create a file in /nonexistent/dir/: No such file or directory"),
    (["--ready-file", "/proc/ready"], "cannot create a file in /proc/"),
])
def test_watch_rejects_before_loading_anything(started, args, needle):
    r = run("watch", *args)
    assert r.exit_code == 2, r.output
    assert needle in one_error_line(r)
    assert started == []


def test_ready_file_that_is_a_directory(started, tmp_path):
    r = run("watch", "--ready-file", str(tmp_path))
    assert r.exit_code == 2
    assert f"'{tmp_path}' is a directory" in one_error_line(r)
    assert started == []


@pytest.mark.parametrize("command", [["export"], ["prove"], ["peer", "--port", "47399"]])
def test_every_command_checks_its_ready_file_first(started, command):
    r = run(*command, "--ready-file", "/nonexistent/dir/ready")
    assert r.exit_code == 2
    assert "cannot create a file in /nonexistent/dir/" in one_error_line(r)
    assert started == []


def test_good_values_reach_the_command(started, tmp_path):
    r = run("watch", "-i", "0.5", "-d", "3600", "--ready-file", str(tmp_path / "ready"))
    assert r.exit_code == 0, r.output
    (name, kw), = started
    assert (kw["interval"], kw["duration"], kw["count"]) == (0.5, 3600.0, None)
    assert not (tmp_path / "ready").exists()  # the check leaves nothing behind
    assert list(tmp_path.iterdir()) == []


def test_once_is_count_one(started):
    assert run("watch", "--once").exit_code == 0
    assert started[0][1]["count"] == 1


def _params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params}


COMMANDS = {name: cli.commands[name] for name in ("watch", "export", "prove", "peer")}


def test_shared_options_are_one_definition():
    # the same choices, help and hidden-ness wherever an option appears
    for option in ("prefer", "ebpf", "ready_file"):
        seen = [_params(c)[option] for c in COMMANDS.values() if option in _params(c)]
        assert len(seen) >= 3 if option != "ebpf" else len(seen) == 3, option
        if option == "prefer":
            assert {tuple(p.type.choices) for p in seen} == {cli_options.PREFER_CHOICES}
        if option == "ebpf":
            assert {p.help for p in seen} == {"Print the generated BPF C and exit."}
        if option == "ready_file":
            assert all(p.hidden and "JSON" in p.help and "ouch" not in p.help for p in seen)


def test_ready_file_is_whole_json(tmp_path):
    target = tmp_path / "ready"
    cli_options.write_ready_file(str(target), {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["ready"]
    cli_options.write_ready_file(None, {})  # no file asked for: nothing to do


def test_sigterm_unwinds_as_ctrl_c_everywhere():
    import signal

    old = signal.getsignal(signal.SIGTERM)
    try:
        cli_options.sigterm_unwinds()
        with pytest.raises(cli_options.Terminated):
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)


def test_main_exits_quietly_on_sigterm(monkeypatch, capsys):
    def stopped(**kw):
        raise cli_options.Terminated()

    monkeypatch.setattr("netprobe.commands.watch.run_watch", stopped)
    monkeypatch.setattr("netprobe.commands.cli.sigterm_unwinds", lambda: None)
    monkeypatch.setattr("sys.argv", ["netprobe", "watch"])
    with pytest.raises(SystemExit) as exit:
        cli_module.main()
    assert exit.value.code == 0
    assert capsys.readouterr().err == ""
