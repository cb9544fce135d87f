"""``@kernel`` (index-space), ``@array_stage`` and ``@composite`` ops."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..device import cuda_guard, is_simulator
from ..errors import KernelError
from ..numeric import (
    NumericOp,
    _compile_error,
    _map_out,
    _numba_errors,
    _signature_params,
    bind_params,
)
from . import cpu as cpu_backend
from . import cuda as cuda_backend

__all__ = ["KernelOp", "ArrayOp", "CompositeOp", "kernel", "array_stage", "composite"]

OutSpec = Any  # "like:<input>" | callable(*arrays, **params) -> (shape, dtype) | (shape, dtype)


class KernelOp(NumericOp):
    """An index-space kernel ``f(out, i0, .., *arrays, *params)``; see :func:`kernel`."""

    kind = "kernel"

    def __init__(self, fn: Callable, out: OutSpec, name: str | None = None,
                 ndim: dict[str, int | tuple[int, ...]] | None = None, grid: Any = None):
        super().__init__(fn, name)
        self.out, self.grid = out, grid
        self.ndim = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in (ndim or {}).items()}
        self._params = _signature_params(fn, self.name)
        if len(self._params) < 2:
            raise KernelError("an index kernel takes (out, i0, ..., *arrays, *params)",
                              kernel=self.name)
        if isinstance(out, str) and not out.startswith("like:"):
            raise KernelError(f"out={out!r}: expected 'like:<input name>', a function of the "
                              "inputs returning (shape, dtype), or (shape, dtype)",
                              kernel=self.name)

    def _reset_caches(self) -> None:
        super()._reset_caches()
        self._body_cpu = None
        self._body_cuda = None

    def _output(self, arrays: Sequence[Any], params: dict[str, Any]
                ) -> tuple[tuple[int, ...], np.dtype, tuple[int, ...], list[Any]]:
        """``(shape, dtype, index space, param values)``; KernelError if anything is off."""
        self._check_arrays(arrays)
        spec = self.out
        grid = None
        if self.grid is not None:
            grid = self._shape_of(self.grid, arrays, params, "grid")
        if isinstance(spec, str):
            target = spec[len("like:"):]
            # the index arguments come before the arrays; the input is found by name
            names = [p.name for p in self._params]
            for ndim in (1, 2, 3) if grid is None else (len(grid),):
                slots = names[1 + ndim:1 + ndim + len(arrays)]
                if target in slots and (grid is not None
                                       or len(arrays[slots.index(target)].shape) == ndim):
                    src = arrays[slots.index(target)]
                    shape, dtype = tuple(src.shape), np.dtype(src.dtype)
                    break
            else:
                raise KernelError(f"out={spec!r}: no input named {target!r} whose number of "
                                  "dimensions matches the kernel's index arguments",
                                  kernel=self.name)
        else:
            try:
                shape, dtype = spec(*arrays, **params) if callable(spec) else spec
                shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
            except KernelError:
                raise
            except Exception as exc:
                raise KernelError(f"the out= spec failed: {type(exc).__name__}: {exc}",
                                  kernel=self.name) from exc
        grid = shape if grid is None else grid
        ndim = len(grid)
        if ndim not in (1, 2, 3):
            raise KernelError(f"the index space has {ndim} dimensions; index kernels support "
                              "1 to 3", kernel=self.name)
        skip = 1 + ndim + len(arrays)
        if skip > len(self._params):
            raise KernelError(f"{len(arrays)} array(s) and {ndim} index argument(s) given, "
                              f"but the function takes {len(self._params)} argument(s)",
                              kernel=self.name)
        for p, a in zip(self._params[1 + ndim:skip], arrays, strict=False):
            allowed = self.ndim.get(p.name)
            if allowed and a.ndim not in allowed:
                raise KernelError(f"input {p.name!r} has {a.ndim} dimensions; expected "
                                  f"{' or '.join(map(str, allowed))}", kernel=self.name)
        values = bind_params(self.name, self._params, params, skip)
        for v, p in zip(values, self._params[skip:], strict=False):
            if not isinstance(v, (bool, int, float, complex, np.generic)):
                raise KernelError(f"parameter {p.name!r} must be a number, got "
                                  f"{type(v).__name__}", kernel=self.name)
        return shape, dtype, grid, values

    def _shape_of(self, spec: Any, arrays: Sequence[Any], params: dict[str, Any],
                  what: str) -> tuple[int, ...]:
        try:
            shape = spec(*arrays, **params) if callable(spec) else spec
            return tuple(int(n) for n in shape)
        except Exception as exc:
            raise KernelError(f"the {what}= spec failed: {type(exc).__name__}: {exc}",
                              kernel=self.name) from exc

    def check(self, arrays: Sequence[Any], params: dict[str, Any]) -> None:
        self._output(arrays, params)

    def _bodies(self) -> tuple[Any, Any]:
        with self._lock:
            if self._body_cpu is None:
                self._body_cpu = cpu_backend.scalar_jit(self.fn)
            return self._body_cpu, self._body_cuda

    def run_cpu(self, arrays: tuple, params: dict[str, Any]) -> np.ndarray:
        shape, dtype, grid, values = self._output(arrays, params)
        out = np.empty(shape, dtype=dtype)
        if out.size == 0 or 0 in grid:
            return out
        body, _ = self._bodies()
        loop = self._cached(("cpu", len(grid), len(arrays), len(values)),
                            lambda: cpu_backend.index_loop(body, len(grid), len(arrays),
                                                           len(values)))
        try:
            loop(out, *grid, *arrays, *values)
        except _numba_errors() as exc:
            raise _compile_error(self.name, exc, "cpu") from exc
        return out

    def run_gpu(self, arrays: tuple, params: dict[str, Any], stream: Any) -> Any:
        from numba import cuda

        arrays = tuple(cuda_backend.as_device_array(a) for a in arrays)
        shape, dtype, grid, values = self._output(arrays, params)
        with cuda_guard():
            out = cuda.device_array(shape, dtype=dtype, stream=stream)
        if out.size == 0 or 0 in grid:
            return out
        key = ("gpu", len(grid), len(arrays), len(values))
        kern = self._cached(key, lambda: cuda_backend.index_kernel(
            cuda_backend.device_jit(self.fn), len(grid), len(arrays), len(values)))
        if is_simulator():
            self._type_check_on_cpu(out, len(grid), arrays, values)
        blocks, threads = cuda_backend.launch_config(grid, flat=False)
        try:
            with cuda_guard():
                kern[blocks, threads, stream](out, *grid, *arrays, *values)
        except _numba_errors() as exc:
            raise _compile_error(self.name, exc, "gpu") from exc
        except (IndexError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            raise _compile_error(self.name, exc, "gpu") from exc
        return out

    def _type_check_on_cpu(self, out: Any, ndim: int, arrays: Sequence[Any],
                           values: list[Any]) -> None:
        # The simulator runs kernels as plain Python, which accepts code the CUDA
        # compiler rejects; typing the body with Numba keeps the two targets honest.
        from numba import typeof

        def host_type(a):
            return typeof(np.empty((1,) * a.ndim, dtype=a.dtype))

        types = (host_type(out), *([typeof(0)] * ndim), *(host_type(a) for a in arrays),
                 *(typeof(v) for v in values))
        body, _ = self._bodies()
        if types in self._compiled:
            return
        try:
            body.compile(types)
        except _numba_errors() as exc:
            raise _compile_error(self.name, exc, "gpu") from exc
        with self._lock:
            self._compiled[types] = True


def kernel(out: OutSpec, *, name: str | None = None,
           ndim: dict[str, int | tuple[int, ...]] | None = None,
           grid: Any = None) -> Callable[[Callable], KernelOp]:
    """Make ``f(out, i0, .., *arrays, *params)`` an index-space :class:`NumericOp`.

    ``f`` runs once per index of the output (CUDA: one thread each; CPU: a
    ``prange`` over axis 0) and writes ``out[i0, ..]`` (possibly several
    channels ``out[i0, i1, c]`` in a loop). ``out`` gives the output:
    ``"like:img"`` (shape and dtype of input ``img``), a function
    ``spec(*arrays, **params) -> (shape, dtype)``, or ``(shape, dtype)``.
    1 to 3 output dimensions. ``ndim={"img": (2, 3)}`` restricts inputs.
    ``grid=`` (a shape, or a function of the inputs like ``out``) sets an
    index space other than the output's shape, e.g. ``(channels, chunks)``
    for partial histograms where each index fills a row of bins.
    Parameters are passed as given (a Python float is a float64): kernels
    cast explicitly where they want float32 arithmetic.
    """
    return lambda fn: KernelOp(fn, out, name, ndim, grid)


class ArrayOp(NumericOp):
    """``f(xp, *arrays, **params)`` on whole arrays; see :func:`array_stage`."""

    kind = "array"

    def __init__(self, fn: Callable, name: str | None = None):
        super().__init__(fn, name)
        # plain Python: *arrays and keyword parameters are allowed here
        self._signature = inspect.signature(fn)

    def check(self, arrays: Sequence[Any], params: dict[str, Any]) -> None:
        self._check_arrays(arrays)
        try:
            self._signature.bind(np, *arrays, **params)
        except TypeError as exc:
            raise KernelError(f"bad arguments: {exc}", kernel=self.name) from exc

    def run_cpu(self, arrays: tuple, params: dict[str, Any]) -> Any:
        self.check(arrays, params)
        out = self.fn(np, *arrays, **params)
        return _map_out(out, np.asarray)

    def run_gpu(self, arrays: tuple, params: dict[str, Any], stream: Any) -> Any:
        """With CuPy: zero-copy views, run on ``stream``. Without (the simulator):
        copy to the host, wait for the copy, run NumPy, upload the result."""
        from numba import cuda

        arrays = tuple(cuda_backend.as_device_array(a) for a in arrays)
        self.check(arrays, params)
        cupy = _cupy()
        if cupy is not None:
            with cupy.cuda.ExternalStream(_stream_handle(stream)):
                out = self.fn(cupy, *(cupy.asarray(a) for a in arrays), **params)
            return _map_out(out, cuda.as_cuda_array)
        with cuda_guard():
            host = [a.copy_to_host(stream=stream) for a in arrays]
            stream.synchronize()
        out = self.fn(np, *host, **params)
        with cuda_guard():
            return _map_out(out, lambda o: cuda.to_device(np.ascontiguousarray(o), stream=stream))


def _cupy() -> Any:
    if is_simulator():
        return None  # CuPy cannot read the simulator's fake device memory
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _stream_handle(stream: Any) -> int:
    handle = getattr(stream, "handle", 0)
    value = getattr(handle, "value", handle)
    return int(value or 0)


def array_stage(fn: Callable | None = None, *, name: str | None = None) -> Any:
    """Make ``f(xp, *arrays, **params)`` a :class:`NumericOp` of kind ``"array"``.

    ``xp`` is NumPy on the CPU and CuPy on a GPU; without CuPy (and under the
    simulator) the GPU path runs NumPy on host copies and uploads the result,
    waiting for the copies on the op's stream. ``f`` may return an array or a
    tuple of arrays.
    """
    if fn is None:
        return lambda f: ArrayOp(f, name)
    return ArrayOp(fn, name)


class Runner:
    """What a composite function gets as ``run``: runs sub-ops on one target."""

    def __init__(self, device: str, stream: Any = None):
        self.device, self.stream = device, stream

    def __call__(self, op: NumericOp, *arrays: Any, **params: Any) -> Any:
        if self.device == "cpu":
            return op.run_cpu(arrays, params)
        return op.run_gpu(arrays, params, self.stream)

    def const(self, host: np.ndarray) -> Any:
        """A host array made available on this target (uploaded on the stream)."""
        if self.device == "cpu":
            return np.ascontiguousarray(host)
        from numba import cuda

        with cuda_guard():
            return cuda.to_device(np.ascontiguousarray(host), stream=self.stream)


class CompositeOp(NumericOp):
    """A host function chaining other ops; see :func:`composite`."""

    kind = "kernel"

    def __init__(self, fn: Callable, name: str | None = None,
                 ndim: dict[str, int | tuple[int, ...]] | None = None):
        super().__init__(fn, name)
        self._params = _signature_params(fn, self.name)
        self.ndim = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in (ndim or {}).items()}

    def check(self, arrays: Sequence[Any], params: dict[str, Any]) -> None:
        self._check_arrays(arrays)
        skip = 1 + len(arrays)
        if skip > len(self._params):
            raise KernelError(f"{len(arrays)} array(s) given but the function takes "
                              f"{len(self._params) - 1}", kernel=self.name)
        for p, a in zip(self._params[1:skip], arrays, strict=False):
            allowed = self.ndim.get(p.name)
            if allowed and a.ndim not in allowed:
                raise KernelError(f"input {p.name!r} has {a.ndim} dimensions; expected "
                                  f"{' or '.join(map(str, allowed))}", kernel=self.name)
        bind_params(self.name, self._params, params, skip)

    def run_cpu(self, arrays: tuple, params: dict[str, Any]) -> Any:
        self.check(arrays, params)
        return self.fn(Runner("cpu"), *arrays, **params)

    def run_gpu(self, arrays: tuple, params: dict[str, Any], stream: Any) -> Any:
        arrays = tuple(cuda_backend.as_device_array(a) for a in arrays)
        self.check(arrays, params)
        return self.fn(Runner("gpu", stream), *arrays, **params)


def composite(fn: Callable | None = None, *, name: str | None = None,
              ndim: dict[str, int | tuple[int, ...]] | None = None) -> Any:
    """Make ``f(run, *arrays, **params)``, a chain of other ops, a :class:`NumericOp`.

    ``run(op, *arrays, **params)`` runs a sub-op on the target the composite
    runs on; ``run.const(host_array)`` provides host data (filter weights)
    there; ``run.device`` is ``"cpu"`` or ``"gpu"``. Never synchronises.
    """
    if fn is None:
        return lambda f: CompositeOp(f, name, ndim)
    return CompositeOp(fn, name, ndim)
