"""Configuration read once from ``FLOWGPU_*`` environment variables.

Everything flowgpu reads from the environment is read here, at import, into
:data:`settings`. Code that wants a different value for a while uses
:func:`override` (a scope), never ``os.environ``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

__all__ = ["Settings", "settings", "override"]

_DEVICES = ("auto", "cpu", "gpu")


@dataclasses.dataclass
class Settings:
    #: what ``device="auto"`` means: "auto" (GPU when present), "cpu" or "gpu"
    device: str = "auto"
    #: seconds of no progress before the stall watchdog reports; 0 turns it off
    stall_timeout: float = 0.0


def _from_env(env: os._Environ | dict) -> Settings:
    s = Settings()
    device = env.get("FLOWGPU_DEVICE", "").strip().lower()
    if device:
        if device not in _DEVICES:
            raise ValueError(f"FLOWGPU_DEVICE={device!r}: expected one of {', '.join(_DEVICES)}")
        s.device = device
    stall = env.get("FLOWGPU_STALL_TIMEOUT", "").strip()
    if stall:
        s.stall_timeout = float(stall)
    return s


settings: Settings = _from_env(os.environ)


@contextlib.contextmanager
def override(**changes) -> Iterator[Settings]:
    """Change settings for the duration of a ``with`` block (not thread-local)."""
    global settings
    old = settings
    settings = dataclasses.replace(old, **changes)
    try:
        yield settings
    finally:
        settings = old
