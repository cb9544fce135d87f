"""Numeric ops: a kernel written once, compiled for the CPU and for CUDA.

Four kinds, one interface (:class:`NumericOp`), which the runtime calls:

``@elementwise``
    ``f(x, ..., *params)``: a scalar function applied to every element of
    one or more arrays of the same shape. CPU: a Numba ``prange`` loop over
    the flattened elements; CUDA: one thread per element. Consecutive ones
    fuse (:func:`fuse`) into one kernel. Dtypes: see
    :mod:`flowgpu.backends.dtypes`.
``@kernel(out=...)``
    ``f(out, i0, ..., *arrays, *params)``: called once per output index
    (CUDA: one thread per index; CPU: ``prange`` over the outer axis, plain
    loops over the others). The output is uninitialised: the body must write
    every element it owns, and only those. Reductions into fixed bins (a
    histogram, a group-by) therefore run in two phases, race-free on both
    targets and deterministic: a kernel over ``(chunk, bin-row)`` fills a
    private partial row per index, then a kernel over the bins sums the
    partials (see :func:`flowgpu.kernels.image.histogram`).
``@array_stage``
    ``f(xp, *arrays, **params)``: whole-array code; ``xp`` is NumPy on the
    CPU and CuPy on a GPU (zero-copy views through
    ``__cuda_array_interface__``, run on the op's stream). Without CuPy, as
    under the simulator, the GPU path copies the inputs to the host, waits
    for them, runs NumPy and uploads the result.
``@composite``
    ``f(run, *arrays, **params)``: a host function that chains other ops,
    e.g. the two passes of a separable blur; ``run(op, *arrays, **params)``
    runs a sub-op on the caller's target and ``run.const(host_array)`` makes
    a host constant (filter weights) usable there. Reported as kind
    ``"kernel"``.

Bad input policy, the same on both targets: non-array inputs, unknown or
missing parameters, shapes that differ (elementwise), and dimensions a
kernel does not accept raise :class:`~flowgpu.errors.KernelError` naming the
kernel, before anything runs. Non-contiguous and negatively strided inputs
give correct results: elementwise ops copy them to contiguous memory on the
CPU and index them in place on the GPU; index kernels read them in place.
Outputs are always new C-contiguous arrays. Zero-size inputs give an empty
output of the right shape and dtype; nothing is launched. No fast-math:
NaN and infinities follow IEEE 754.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backends import dtypes as dt_rules
from .backends.cuda import as_device_array, is_device_array
from .device import cuda_guard, resolve
from .errors import KernelError

__all__ = ["NumericOp", "ElementwiseOp", "KernelOp", "ArrayOp", "CompositeOp", "FusedOp",
           "elementwise", "kernel", "array_stage", "composite", "fuse"]

_ids = itertools.count()


def _numba_errors() -> tuple[type[BaseException], ...]:
    from numba.core.errors import NumbaError

    return (NumbaError,)


def _compile_error(name: str, exc: BaseException, device: str) -> KernelError:
    first = str(exc).strip().splitlines()
    detail = first[0] if first else type(exc).__name__
    err = KernelError(f"failed to compile or run ({type(exc).__name__}: {detail})",
                      kernel=name, device=device)
    err.__cause__ = exc
    return err


class NumericOp:
    """A numeric op the runtime can place on the CPU or the GPU.

    Attributes: ``name``, ``kind`` (``"elementwise" | "kernel" | "array"``),
    ``fusable`` (True for elementwise ops).
    """

    kind: str = ""
    fusable: bool = False

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "op")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.name)
        self._uid = next(_ids)
        self._lock = threading.Lock()  # guards the compiled-function caches
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._compiled: dict[Any, Any] = {}

    # -- the interface the runtime calls ------------------------------------------------
    def check(self, arrays: Sequence[Any], params: dict[str, Any]) -> None:
        """Validate inputs and parameter names; raise :class:`KernelError` if bad."""
        raise NotImplementedError

    def run_cpu(self, arrays: tuple, params: dict[str, Any]) -> Any:
        """Compute on the CPU, synchronously; NumPy arrays in and out."""
        raise NotImplementedError

    def run_gpu(self, arrays: tuple, params: dict[str, Any], stream: Any) -> Any:
        """Enqueue on ``stream``; device arrays in, a device array out. Does not wait."""
        raise NotImplementedError

    # -- standalone use -----------------------------------------------------------------
    def __call__(self, *arrays: Any, device: str = "auto", **params: Any) -> Any:
        """Run now. Host arrays in: NumPy out; device arrays in: a device array out.

        ``device`` is resolved by :func:`flowgpu.device.resolve` (``"auto"``
        with device inputs means the GPU). Blocks until the result is ready.
        Raises :class:`KernelError` or :class:`~flowgpu.errors.DeviceUnavailable`.
        """
        on_device = any(is_device_array(a) for a in arrays)
        target = "gpu" if on_device and device == "auto" else resolve(device)
        if target == "cpu":
            host = tuple(_to_host(a) for a in arrays)
            out = self.run_cpu(host, params)
            return _to_device_like(out) if on_device else out
        from numba import cuda

        with cuda_guard():
            stream = cuda.stream()
            dev = tuple(as_device_array(a) if is_device_array(a) else _upload(a, stream)
                        for a in arrays)
        out = self.run_gpu(dev, params, stream)
        with cuda_guard():
            if on_device:
                stream.synchronize()
                return out
            host = _map_out(out, lambda o: o.copy_to_host(stream=stream))
            stream.synchronize()
            return host

    # -- pickling: by reference when importable, else without compiled code --------------
    def __reduce__(self):
        import importlib

        try:
            mod = importlib.import_module(self.__module__)
            if getattr(mod, self.__qualname__, None) is self:
                return (_import_op, (self.__module__, self.__qualname__))
        except Exception:  # not importable: pickle the definition by value
            pass
        return object.__reduce_ex__(self, 2)

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_compiled", "_lock", "_scalar_cpu", "_scalar_cuda", "_body_cpu",
                    "_body_cuda"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._reset_caches()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind}>"

    # -- helpers ------------------------------------------------------------------------
    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._compiled.get(key)
        if hit is None:
            hit = make()  # compiling outside the lock: another op may be compiling too
            with self._lock:
                hit = self._compiled.setdefault(key, hit)
        return hit

    def _check_arrays(self, arrays: Sequence[Any]) -> None:
        if not isinstance(arrays, (tuple, list)):
            raise KernelError(f"expected a tuple of arrays, got {type(arrays).__name__}",
                              kernel=self.name)
        for i, a in enumerate(arrays):
            if not (isinstance(a, np.ndarray) or is_device_array(a)):
                raise KernelError(f"input {i} is a {type(a).__name__}, not an array "
                                  "(NumPy or CUDA device array)", kernel=self.name)
            dt_rules.check_dtype(np.dtype(a.dtype), f"input {i}", self.name)


def _import_op(module: str, qualname: str) -> NumericOp:
    import importlib

    return getattr(importlib.import_module(module), qualname)


def _to_host(a: Any) -> Any:
    if is_device_array(a):
        with cuda_guard():
            return as_device_array(a).copy_to_host()
    return a


def _upload(a: Any, stream: Any) -> Any:
    from numba import cuda

    # cuda.to_device needs contiguous memory; a view is copied first
    return cuda.to_device(np.ascontiguousarray(a), stream=stream)


def _to_device_like(out: Any) -> Any:
    from numba import cuda

    with cuda_guard():
        return _map_out(out, lambda o: cuda.to_device(np.ascontiguousarray(o)))


def _map_out(out: Any, fn: Callable[[Any], Any]) -> Any:
    return tuple(fn(o) for o in out) if isinstance(out, tuple) else fn(out)


def _signature_params(fn: Callable, name: str) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"cannot read the signature of {fn!r}", kernel=name) from exc
    params = list(sig.parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            raise KernelError(f"parameter {p.name!r}: kernel functions take plain positional "
                              "parameters only (no *args, **kwargs or keyword-only)", kernel=name)
    return params


def bind_params(name: str, names: Sequence[inspect.Parameter], params: dict[str, Any],
                skip: int) -> list[Any]:
    """Parameter values in signature order after the first ``skip``; KernelError if bad."""
    rest = list(names[skip:])
    known = {p.name for p in rest}
    unknown = sorted(set(params) - known)
    if unknown:
        taken = {p.name for p in names[:skip]}
        hint = (f"; {unknown[0]!r} is an array slot here, pass arrays positionally"
                if unknown[0] in taken else "")
        raise KernelError(f"unknown parameter(s) {unknown}; it takes {sorted(known)}{hint}",
                          kernel=name)
    values = []
    for p in rest:
        if p.name in params:
            values.append(params[p.name])
        elif p.default is not p.empty:
            values.append(p.default)
        else:
            raise KernelError(f"missing parameter {p.name!r}", kernel=name)
    return values


# The decorators live in their own modules; re-exported here as the public surface.
from .backends.ops_elementwise import ElementwiseOp, FusedOp, elementwise, fuse  # noqa: E402
from .backends.ops_index import ArrayOp, CompositeOp, KernelOp, array_stage, composite, kernel  # noqa: E402,I001
