"""Man pages for `netprobe` and each of its commands, made from the CLI's own click help (the
same text and option records `--help` prints), so a page cannot say other than the command.
The main page adds shell completion and an OVERHEAD section, taken from docs/OVERHEAD.md's
"Summary" section.

    python scripts/manpages.py DIR      # writes DIR/netprobe.1, DIR/netprobe-watch.1, ...

scripts/setup.sh installs them into /usr/local/share/man/man1.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pyfront"))

from netprobe import __version__  # noqa: E402
from netprobe.commands.cli import cli  # noqa: E402

OVERHEAD_MD = ROOT / "docs" / "OVERHEAD.md"


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def paragraphs(text: str) -> str:
    """click's help text (paragraphs separated by blank lines; \\b marks one kept as written)"""
    out = []
    for para in re.split(r"\n\s*\n", click.unstyle(text).strip()):
        if para.startswith("\b\n"):
            out.append(".PP\n.nf\n" + roff(para[2:]) + "\n.fi")
        else:
            out.append(".PP\n" + roff(" ".join(l.strip() for l in para.splitlines())))
    return "\n".join(out)


def options(ctx: click.Context) -> str:
    out = []
    for param in ctx.command.get_params(ctx):
        record = param.get_help_record(ctx)  # None for hidden options, as in --help
        if record is None:
            continue
        opts, help_text = record
        out.append(f".TP\n.B {roff(opts)}\n{roff(help_text) if help_text else ''}")
    return "\n".join(out)


def page_name(path: list[str]) -> str:
    return "-".join(path)


def header(path: list[str], summary: str) -> str:
    name = page_name(path)
    # .nh .ad l: no hyphenation, no justification, so names and options stay whole
    return (f'.TH {name.upper()} 1 "" "netprobe {__version__}" "User Commands"\n.nh\n.ad l\n'
            f".SH NAME\n{roff(name)} \\- {roff(summary)}\n")


def command_page(name: str, command: click.Command, parent: click.Context) -> str:
    ctx = click.Context(command, info_name=name, parent=parent)
    synopsis = " ".join(command.collect_usage_pieces(ctx))
    return "\n".join([
        header(["netprobe", name], command.get_short_help_str(limit=200)),
        f".SH SYNOPSIS\n.B netprobe {name}\n{roff(synopsis)}",
        ".SH DESCRIPTION", paragraphs(command.help or ""),
        ".SH OPTIONS", options(ctx),
        ".SH SEE ALSO\n.BR netprobe (1)", ""])


def overhead_summary() -> str:
    """docs/OVERHEAD.md's "## Summary" section, the one place its numbers are written."""
    text = OVERHEAD_MD.read_text()
    m = re.search(r"^## Summary\n(.*?)(?=^## )", text, re.S | re.M)
    if not m:
        raise SystemExit(f"{OVERHEAD_MD}: no '## Summary' section for the man page")
    body = re.sub(r"<!--.*?-->", "", m[1], flags=re.S)
    body = re.sub(r"`([^`]*)`", r"\1", body).replace("**", "")
    out = []
    for para in re.split(r"\n\s*\n", body.strip()):
        if para.startswith("- "):
            for item in re.split(r"\n(?=- )", para):
                out.append(".IP \\(bu 2\n" + roff(" ".join(l.strip() for l in item[2:].splitlines())))
        else:
            out.append(".PP\n" + roff(" ".join(l.strip() for l in para.splitlines())))
    return "\n".join(out)


COMPLETION = """\
.PP
netprobe completes its commands and options in bash, zsh and fish (click's completion).
Put one of these in the shell's start-up file:
.PP
.nf
.RS
eval "$(_NETPROBE_COMPLETE=bash_source netprobe)"    # ~/.bashrc
eval "$(_NETPROBE_COMPLETE=zsh_source netprobe)"     # ~/.zshrc
_NETPROBE_COMPLETE=fish_source netprobe | source     # ~/.config/fish/completions/netprobe.fish
.RE
.fi
.PP
Or write the script once (for bash: _NETPROBE_COMPLETE=bash_source netprobe >
/etc/bash_completion.d/netprobe), which spares starting netprobe with every shell."""


def main_page(ctx: click.Context) -> str:
    rows = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        rows.append(f".TP\n.B netprobe {name}\n{roff(command.get_short_help_str(limit=200))} "
                    f"See\n.BR netprobe\\-{name} (1).")
    see_also = ",\n".join(f".BR netprobe\\-{n} (1)" for n in cli.list_commands(ctx))
    return "\n".join([
        header(["netprobe"], (cli.help or "").strip().splitlines()[0]),
        ".SH SYNOPSIS\n.B netprobe\n[\\-\\-version] [\\-h] COMMAND [OPTIONS]",
        ".SH DESCRIPTION", paragraphs(cli.help or ""),
        ".PP\nEvery command but peer loads BPF programs and needs root. Ctrl\\-C or SIGTERM "
        "ends a command and detaches every probe it attached.",
        ".SH COMMANDS", *rows,
        ".SH OPTIONS", options(ctx),
        ".SH SHELL COMPLETION", COMPLETION,
        ".SH OVERHEAD", overhead_summary(),
        ".SH SEE ALSO", see_also, ""])


def pages() -> dict[str, str]:
    ctx = click.Context(cli, info_name="netprobe", **cli.context_settings)
    out = {"netprobe.1": main_page(ctx)}
    for name in cli.list_commands(ctx):
        out[f"netprobe-{name}.1"] = command_page(name, cli.get_command(ctx, name), ctx)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(argv[0])
    target.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (target / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
