"""Which device a numeric stage runs on, and whether a GPU is there at all.

Backends are found by name: ``"cpu"`` (Numba parallel code) and ``"gpu"``
(Numba CUDA; the CUDA simulator counts as the GPU backend when
``NUMBA_ENABLE_CUDASIM=1``, so that every GPU code path is testable without
one).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

from . import config
from .errors import DeviceUnavailable

__all__ = ["gpu_status", "gpu_available", "is_simulator", "resolve", "cuda_guard"]


def is_simulator() -> bool:
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """``(available, reason)``: whether the ``gpu`` backend can run, and why not.

    Checked once per process: importing numba.cuda and probing the driver
    costs hundreds of milliseconds.
    """
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        return False, (f"numba.cuda cannot be imported ({exc}); "
                       "install flowgpu[gpu-cu12] or flowgpu[gpu-cu13]")
    if is_simulator():
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return True, f"CUDA device {cuda.get_current_device().name!r}"
    except Exception as exc:
        return False, f"the CUDA driver failed: {exc}"
    try:
        from numba.cuda.cudadrv.driver import driver

        driver.get_device_count()
        return False, "no CUDA device was found"
    except Exception as exc:
        return False, f"no usable CUDA driver ({type(exc).__name__}: {exc})"


def gpu_available() -> bool:
    return gpu_status()[0]


def resolve(requested: str | None = None) -> str:
    """Turn ``"auto" | "cpu" | "gpu" | None`` into ``"cpu"`` or ``"gpu"``.

    ``None`` and ``"auto"`` follow ``FLOWGPU_DEVICE`` (default ``auto``: the GPU
    when present, else the CPU). An explicit ``"gpu"`` without one raises
    :class:`DeviceUnavailable` with the reason; it never falls back silently.
    """
    req = (requested or "auto").lower()
    if req == "auto":
        req = config.settings.device
    if req == "cpu":
        return "cpu"
    if req not in ("gpu", "auto"):
        raise ValueError(f"device={requested!r}: expected 'auto', 'cpu' or 'gpu'")
    ok, reason = gpu_status()
    if ok:
        return "gpu"
    if req == "gpu":
        raise DeviceUnavailable("gpu", reason)
    return "cpu"


# The simulator runs kernels in Python threads whose state is global: two
# threads inside simulated CUDA calls at once break each other. All CUDA work
# goes through cuda_guard(); on a real GPU it costs nothing.
_SIM_LOCK = threading.RLock()


@contextlib.contextmanager
def cuda_guard() -> Iterator[None]:
    """Serialise CUDA calls under the simulator; a no-op on a real GPU."""
    if is_simulator():
        with _SIM_LOCK:
            yield
    else:
        yield
