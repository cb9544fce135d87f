"""flowgpu: dataflow pipelines across CPU threads and NVIDIA GPUs."""

from __future__ import annotations

from . import config  # noqa: F401 - a bad FLOWGPU_* variable fails here, at import
from .channel import Channel, RecvCase, SendCase, select
from .context import Context, current_context
from .errors import (
    Cancelled,
    ChannelClosed,
    DeadlineExceeded,
    DeviceUnavailable,
    FlowError,
    GraphError,
    KernelError,
    StageError,
    Timeout,
)
from .graph import Graph, Stream, zip
from .report import RunReport, StageStats
from .taskgroup import TaskGroup

__version__ = "0.1.0"

# The numeric layer imports numba (hundreds of milliseconds); load it on first use.
_LAZY = {
    "elementwise": "flowgpu.numeric", "kernel": "flowgpu.numeric",
    "array_stage": "flowgpu.numeric", "composite": "flowgpu.numeric", "fuse": "flowgpu.numeric",
    "NumericOp": "flowgpu.numeric", "topology": "flowgpu.numa",
}


def __getattr__(name: str):
    import importlib

    if name == "kernels":
        return importlib.import_module("flowgpu.kernels")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowgpu' has no attribute {name!r}")

__all__ = [
    "Channel", "RecvCase", "SendCase", "select",
    "Context", "current_context", "TaskGroup",
    "Graph", "Stream", "zip", "RunReport", "StageStats",
    "FlowError", "GraphError", "StageError", "Cancelled", "DeadlineExceeded", "Timeout",
    "ChannelClosed", "KernelError", "DeviceUnavailable",
    "elementwise", "kernel", "array_stage", "composite", "fuse", "NumericOp", "kernels",
    "topology",
]
