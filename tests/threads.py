"""Starting threads in tests, keeping what they returned or raised."""

from __future__ import annotations

import threading


def spawn(fn, *args) -> threading.Thread:
    t = threading.Thread(target=fn, args=args)
    t.start()
    return t


def catching(fn, *args) -> tuple[threading.Thread, dict]:
    """Run fn on a thread; return (thread, box) where box gets its result or exception."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    return spawn(run), box
