"""The GPU runtime: device segments, CUDA streams and events, pinned transfers.

The pieces, from the entry of a device segment to its exit:

* :class:`PinnedPool`: page-locked host staging buffers, bounded and reused;
* :func:`upload` / :class:`Uploader`: host array -> :class:`DeviceItem`;
* :class:`GpuStageExecutor`: one numeric stage on its own CUDA stream;
* :func:`download` / :class:`Downloader`: DeviceItem -> fresh host array;
* :class:`DeviceSegment`: the chain of them, for a single driving thread.
"""

from __future__ import annotations

from .pool import PinnedBuffer, PinnedPool, size_class
from .segment import DeviceSegment
from .stage import GpuStageExecutor, as_kernel_error
from .transfer import (
    DeviceItem,
    Downloader,
    PendingDownload,
    Uploader,
    download,
    start_download,
    upload,
)

__all__ = [
    "DeviceItem",
    "DeviceSegment",
    "Downloader",
    "GpuStageExecutor",
    "PendingDownload",
    "PinnedBuffer",
    "PinnedPool",
    "Uploader",
    "as_kernel_error",
    "download",
    "size_class",
    "start_download",
    "upload",
]
