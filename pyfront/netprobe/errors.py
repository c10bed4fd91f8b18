"""The one error type netprobe shows to a person: a single line, no traceback."""


class NetprobeError(Exception):
    """An error whose message is complete on its own (what failed and, when known, the fix)."""


def one_line(e: BaseException) -> str:
    """The last line of an exception's message (BCC's carry the compiler's or the verifier's
    output before it), or its type's name when it has none"""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
