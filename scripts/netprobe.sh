#!/bin/sh
# The `netprobe` command: scripts/setup.sh installs it as /usr/local/bin/netprobe, with @PYTHON@
# made the venv's python.
#
# Python starts with SIGINT blocked. A Ctrl-C in the interpreter's own start-up (its first
# ~30 ms, before any of netprobe's code runs) would otherwise end it with "Fatal Python error:
# init_import_site" and a traceback; netprobe.entry unblocks SIGINT first thing, so a Ctrl-C
# that came early is delivered then, and netprobe ends quietly as it does on any Ctrl-C.
# (`env --block-signal` is GNU coreutils >= 8.31; without it, start as before.)
python=${NETPROBE_PYTHON:-@PYTHON@}
if env --block-signal=INT true 2>/dev/null; then
  exec env --block-signal=INT "$python" -m netprobe "$@"
fi
exec "$python" -m netprobe "$@"
