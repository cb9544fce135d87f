"""The exception hierarchy. Every error flowgpu raises is a :class:`FlowError`.

Errors carry their context as attributes (``stage``, ``item_index``,
``device``...) and keep the user's own exception as ``__cause__``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "FlowError",
    "GraphError",
    "StageError",
    "Cancelled",
    "DeadlineExceeded",
    "Timeout",
    "ChannelClosed",
    "KernelError",
    "StageKernelError",
    "DeviceUnavailable",
    "summarize",
]

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 6
_repr.maxtuple = 6
_repr.maxdict = 4


def summarize(item: Any) -> str:
    """A short, bounded repr of an item; arrays show shape and dtype, not data.

    Never raises: a user's ``__repr__`` or ``shape`` property may, the summary
    of the item that failed must not.
    """
    try:
        shape = getattr(item, "shape", None)
        dtype = getattr(item, "dtype", None)
        if shape is not None and dtype is not None:
            return f"{type(item).__name__}(shape={tuple(shape)}, dtype={dtype})"
        return _repr.repr(item)
    except Exception:
        return f"<{type(item).__name__} object>"


class FlowError(Exception):
    """Base class of every flowgpu error."""


class GraphError(FlowError):
    """The graph is invalid (a cycle, an unused stream, a bad option...).

    Raised at build or validation time, before anything runs. ``stages`` names
    the stages involved.
    """

    def __init__(self, message: str, stages: tuple[str, ...] = ()):
        super().__init__(message)
        self.stages = tuple(stages)


class StageError(FlowError):
    """A stage function raised. The user's exception is ``__cause__``.

    Attributes: ``stage`` (name), ``item_index`` (position of the item in the
    stage's input, or in the source's output), ``item_summary`` (a short
    repr), ``item`` (the item itself, kept so that :meth:`replay` can call the
    stage again on it).
    """

    def __init__(
        self,
        stage: str,
        item_index: int | None,
        item: Any = None,
        *,
        cause: BaseException | None = None,
        fn: Callable[[Any], Any] | None = None,
        has_item: bool = True,
    ):
        self.stage = stage
        self.item_index = item_index
        self.item = item if has_item else None
        self.has_item = has_item
        self.item_summary = summarize(item) if has_item else ""
        self._fn = fn
        where = f"stage {stage!r}"
        if item_index is not None:
            where += f", item {item_index}"
        if has_item:
            where += f" ({self.item_summary})"
        what = f"{type(cause).__name__}: {cause}" if cause is not None else "failed"
        super().__init__(f"{where}: {what}")
        if cause is not None:
            self.__cause__ = cause

    def replay(self) -> Any:
        """Call the stage function on the failing item again, in this thread.

        Useful under a debugger (``%debug``, ``pdb``). Raises ``FlowError`` when
        the item or the function was not kept (a source's failure has no item).
        """
        if self._fn is None or not self.has_item:
            raise FlowError(f"stage {self.stage!r}: nothing to replay for this error")
        return self._fn(self.item)

    def __reduce__(self):  # keep pickling (and so Dask, multiprocessing) working
        return (_rebuild_stage_error, (self.stage, self.item_index, self.item_summary,
                                       str(self)))


def _rebuild_stage_error(stage, item_index, item_summary, message):
    err = StageError.__new__(StageError)
    Exception.__init__(err, message)
    err.stage, err.item_index, err.item_summary = stage, item_index, item_summary
    err.item, err.has_item, err._fn = None, False, None
    return err


class Cancelled(FlowError):
    """The context was cancelled; ``reason`` says why (a string or an exception)."""

    def __init__(self, reason: Any = None):
        self.reason = reason
        super().__init__(f"cancelled: {reason}" if reason is not None else "cancelled")


class DeadlineExceeded(Cancelled, TimeoutError):
    """The context's deadline passed. Also a ``TimeoutError``."""

    def __init__(self, reason: Any = "deadline exceeded"):
        self.reason = reason
        FlowError.__init__(self, str(reason))


class Timeout(FlowError, TimeoutError):
    """A channel operation or ``select`` did not complete within its ``timeout``."""


class ChannelClosed(FlowError):
    """Send on a closed channel, or receive from a closed and drained one.

    From :func:`flowgpu.select`, ``case_index`` says which case found it closed.
    """

    def __init__(self, message: str = "channel closed", case_index: int | None = None):
        super().__init__(message)
        self.case_index = case_index


class KernelError(FlowError):
    """A numeric kernel failed to compile or to run; names ``kernel`` and ``stage``."""

    def __init__(self, message: str, *, kernel: str | None = None, stage: str | None = None,
                 device: str | None = None):
        prefix = []
        if stage:
            prefix.append(f"stage {stage!r}")
        if kernel:
            prefix.append(f"kernel {kernel!r}")
        if device:
            prefix.append(f"on {device}")
        super().__init__(f"{', '.join(prefix)}: {message}" if prefix else message)
        self.kernel, self.stage, self.device = kernel, stage, device


class StageKernelError(StageError, KernelError):
    """A numeric stage's kernel failed: both a StageError (stage, item) and a
    KernelError (kernel, device); the kernel's error is ``__cause__``."""

    def __init__(self, stage: str, item_index: int | None, item: Any = None, *,
                 cause: KernelError, fn: Callable[[Any], Any] | None = None):
        StageError.__init__(self, stage, item_index, item, cause=cause, fn=fn)
        # KernelError.__init__ (reached through StageError's super()) reset these
        self.stage = stage
        self.kernel, self.device = cause.kernel, cause.device


class DeviceUnavailable(FlowError):
    """The requested device is not present; ``reason`` says why."""

    def __init__(self, device: str, reason: str):
        reason = " ".join(str(reason).split())  # driver messages come with blank lines
        super().__init__(f"device {device!r} is not available: {reason}")
        self.device, self.reason = device, reason
