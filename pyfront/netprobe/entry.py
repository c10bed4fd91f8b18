"""The `netprobe` command's entry point. It imports nothing at module level, so that Ctrl-C
while netprobe is still loading its modules (click, rich, the catalogue) ends it as quietly as
Ctrl-C does later, instead of with a traceback."""


def main() -> None:
    import signal
    import sys

    try:
        # scripts/netprobe.sh starts Python with SIGINT blocked, so that a Ctrl-C during the
        # interpreter's start-up waits for this line; here it becomes a KeyboardInterrupt
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        from .commands.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(0)
    cli_main()
