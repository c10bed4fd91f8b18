"""The one error type netprobe shows to a person: a single line, no traceback."""


class NetprobeError(Exception):
    """An error whose message is complete on its own (what failed and, when known, the fix)."""
