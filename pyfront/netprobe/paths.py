"""Where netprobe's own files are. probes/ is found from the package itself, never relative to
argv[0] or the working directory (BCC resolves relative source paths next to argv[0], which
breaks under a console script)."""
import os
from pathlib import Path


def probes_dir() -> Path:
    env = os.environ.get("NETPROBE_PROBES")
    if env:
        return Path(env)
    # source tree / editable install: <repo>/pyfront/netprobe/paths.py -> <repo>/probes
    return Path(__file__).resolve().parents[2] / "probes"
