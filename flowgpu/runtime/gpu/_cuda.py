"""The few CUDA calls the GPU runtime makes, in one place.

Numba's CUDA module is imported lazily: building a graph must not touch the
device, and importing ``numba.cuda`` costs hundreds of milliseconds. Every
function here wraps its CUDA call in :func:`flowgpu.device.cuda_guard`, which
serialises CUDA work under the simulator and costs nothing on a real GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...device import cuda_guard, is_simulator

__all__ = [
    "cuda_module",
    "new_stream",
    "new_event",
    "is_device_array",
    "as_device_array",
]


def cuda_module() -> Any:
    """``numba.cuda``, imported on first use."""
    from numba import cuda

    return cuda


def new_stream() -> Any:
    """A fresh CUDA stream (never the default stream, which would serialise)."""
    with cuda_guard():
        return cuda_module().stream()


def new_event() -> Any:
    """A fresh CUDA event used for ordering only.

    On a real GPU it is created with ``timing=False``: timing events are more
    expensive to record and to wait on. The simulator's event takes no
    arguments.
    """
    cuda = cuda_module()
    with cuda_guard():
        if is_simulator():
            return cuda.event()
        return cuda.event(timing=False)


def is_device_array(obj: Any) -> bool:
    """True for arrays that already live on the device.

    Numba device arrays (the simulator's fake ones included) carry
    ``__cuda_ndarray__``; CuPy, PyTorch and others export
    ``__cuda_array_interface__``.
    """
    if isinstance(obj, np.ndarray):
        return False
    return bool(getattr(obj, "__cuda_ndarray__", False)) or hasattr(
        obj, "__cuda_array_interface__"
    )


def as_device_array(obj: Any) -> Any:
    """View a device array as a Numba device array, without a copy.

    Numba's own arrays are returned as they are. Foreign ones (CuPy...) go
    through ``cuda.as_cuda_array``, which synchronises the stream the producer
    exported, if any: the producer is outside flowgpu, so no event of ours
    marks its work complete.
    """
    if getattr(obj, "__cuda_ndarray__", False):
        return obj
    with cuda_guard():
        return cuda_module().as_cuda_array(obj)
