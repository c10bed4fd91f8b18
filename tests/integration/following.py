"""Waiting until sessions follow a namespace a test just made: its devices listed and its
netfilter links made (the watcher does it within milliseconds; a refresh at once; but under
load a first try may find the namespace not enterable yet, and the next look links it)."""
import os
import time

import pytest


def linked(sessions, *paths, timeout=10.0):
    inums = [os.stat(p).st_ino for p in paths]
    deadline = time.monotonic() + timeout
    while True:
        for s in sessions:
            s.refresh()
        missing = [(s, i) for s in sessions for i in inums if not s.netfilter_linked(i)]
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail("no netfilter links after %.0f s: %s" % (timeout, "; ".join(
                f"netns {i}: {s.netfilter_unlinked_why(i)} (warnings {s.warnings[-3:]})"
                for s, i in missing)))
        time.sleep(0.05)
