"""``@elementwise`` ops and their fusion into one kernel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..device import cuda_guard
from ..errors import KernelError
from ..numeric import NumericOp, _compile_error, _numba_errors, _signature_params, bind_params
from . import cpu as cpu_backend
from . import cuda as cuda_backend
from . import dtypes as dt_rules

__all__ = ["ElementwiseOp", "FusedOp", "elementwise", "fuse"]

# Loops for a chain of stages, shared by every op and fused op with the same
# stages: the runtime may fuse anew on each run, and must not recompile.
_loops: dict[Any, Any] = {}
_loops_lock = threading.Lock()


class ElementwiseOp(NumericOp):
    """A scalar function applied element by element; see :func:`elementwise`."""

    kind = "elementwise"
    fusable = True

    def __init__(self, fn: Callable, name: str | None = None, out_dtype: Any = None):
        super().__init__(fn, name)
        self.out_dtype = None if out_dtype is None else np.dtype(out_dtype)
        self._params = _signature_params(fn, self.name)
        if not self._params:
            raise KernelError("an elementwise function takes at least one argument",
                              kernel=self.name)

    def _reset_caches(self) -> None:
        super()._reset_caches()
        self._scalar_cpu = None
        self._scalar_cuda = None

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.name,)

    def _stages(self, params: dict[str, Any]) -> list[tuple[ElementwiseOp, dict[str, Any]]]:
        return [(self, params)]

    def check(self, arrays: Sequence[Any], params: dict[str, Any]) -> None:
        _plan(self._stages(params), arrays)

    def run_cpu(self, arrays: tuple, params: dict[str, Any]) -> np.ndarray:
        return _run_cpu(self._stages(params), arrays)

    def run_gpu(self, arrays: tuple, params: dict[str, Any], stream: Any) -> Any:
        return _run_gpu(self._stages(params), arrays, stream)

    # -- per-op compiled pieces -----------------------------------------------------
    def scalar_cpu(self) -> Callable:
        with self._lock:
            if self._scalar_cpu is None:
                self._scalar_cpu = cpu_backend.scalar_jit(self.fn)
            return self._scalar_cpu

    def scalar_cuda(self) -> Callable:
        with self._lock:
            if self._scalar_cuda is None:
                self._scalar_cuda = cuda_backend.device_jit(self.fn)
            return self._scalar_cuda

    def result_dtype(self, in_dtypes: tuple[np.dtype, ...], param_dtypes: tuple[np.dtype, ...],
                     promoted: np.dtype) -> np.dtype:
        """The output dtype for these argument dtypes (compiles the function's CPU version)."""
        key = ("dtype", in_dtypes, param_dtypes)
        with self._lock:
            hit = self._compiled.get(key)
        if hit is not None:
            return hit
        if self.out_dtype is not None:
            out = self.out_dtype
        else:
            types = tuple(dt_rules.numba_type(d) for d in in_dtypes + param_dtypes)
            disp = self.scalar_cpu()
            try:
                disp.compile(types)
            except _numba_errors() as exc:
                raise _compile_error(self.name, exc, "cpu") from exc
            ret = disp.overloads[types].signature.return_type
            out = dt_rules.output_dtype(dt_rules.as_dtype(ret, self.name), promoted)
        with self._lock:
            self._compiled[key] = out
        return out


class FusedOp(ElementwiseOp):
    """Consecutive elementwise ops compiled into one kernel (one read, one write).

    ``name`` is ``"a+b+c"``; ``parts`` the names. Each stage's parameters are
    bound at :func:`fuse` time and stay runtime arguments of the kernel, so
    the same stages with other values reuse the compiled code. ``params`` of
    ``run_cpu``/``run_gpu`` may override them: ``{part_index_or_name: {...}}``.
    """

    def __init__(self, stages: Sequence[tuple[ElementwiseOp, dict[str, Any]]]):
        self.stages = [(op, dict(p)) for op, p in stages]
        NumericOp.__init__(self, self.stages[0][0].fn, "+".join(op.name for op, _ in stages))
        self.out_dtype = None
        self._params = self.stages[0][0]._params

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(op.name for op, _ in self.stages)

    def _stages(self, params: dict[str, Any]) -> list[tuple[ElementwiseOp, dict[str, Any]]]:
        stages = [(op, dict(p)) for op, p in self.stages]
        for key, over in (params or {}).items():
            idx = key if isinstance(key, int) else next(
                (i for i, (op, _) in enumerate(stages) if op.name == key), None)
            if idx is None or not 0 <= idx < len(stages) or not isinstance(over, dict):
                raise KernelError(f"params of a fused op map a part (index or one of "
                                  f"{list(self.parts)}) to a dict; got {key!r}", kernel=self.name)
            stages[idx][1].update(over)
        return stages


def elementwise(fn: Callable | None = None, *, name: str | None = None,
                out_dtype: Any = None) -> Any:
    """Make a scalar function ``f(x, ..., *params)`` an elementwise :class:`NumericOp`.

    Called as ``op(*arrays, device="auto", **params)``: the first
    ``len(arrays)`` arguments of ``f`` receive array elements (arrays of one
    shape), the rest are scalar parameters passed by keyword (defaults
    allowed). Output dtype: NumPy's rules for the same expression, see
    :mod:`flowgpu.backends.dtypes`; ``out_dtype=`` fixes it instead.
    Usable as ``@elementwise`` or ``@elementwise(out_dtype=np.float32)``.
    """
    if fn is None:
        return lambda f: ElementwiseOp(f, name, out_dtype)
    return ElementwiseOp(fn, name, out_dtype)


def fuse(ops_and_params: Sequence[tuple[NumericOp, dict[str, Any]]]) -> NumericOp:
    """One op computing ``op_n(...op_2(op_1(arrays, **p1), **p2)...)`` in one kernel.

    Every op must be elementwise (a :class:`FusedOp` counts; its stages are
    flattened). The first may take several arrays, the others take the
    previous result as their only array. Raises :class:`KernelError` otherwise.
    Results are bitwise equal to running the ops one by one.
    """
    stages: list[tuple[ElementwiseOp, dict[str, Any]]] = []
    for op, params in ops_and_params:
        if not isinstance(op, ElementwiseOp):
            raise KernelError(f"only elementwise ops fuse; {op!r} is not", kernel=getattr(
                op, "name", None))
        stages += op._stages(params) if isinstance(op, FusedOp) else [(op, dict(params))]
    if not stages:
        raise KernelError("fuse() needs at least one op")
    return FusedOp(stages)


# -- planning and running a chain of stages ------------------------------------------------
class _Plan:
    __slots__ = ("shape", "n_arrays", "param_values", "casts", "out_dtype", "per_stage", "key")


def _plan(stages: list[tuple[ElementwiseOp, dict[str, Any]]], arrays: Sequence[Any]) -> _Plan:
    first = stages[0][0]
    name = first.name if len(stages) == 1 else "+".join(op.name for op, _ in stages)
    first._check_arrays(arrays)
    if not arrays:
        raise KernelError("an elementwise op needs at least one array", kernel=name)
    shape = tuple(arrays[0].shape)
    for i, a in enumerate(arrays[1:], 1):
        if tuple(a.shape) != shape:
            raise KernelError(f"input {i} has shape {tuple(a.shape)}, input 0 has {shape}; "
                              "elementwise inputs must have the same shape", kernel=name)
    in_dtypes = tuple(np.dtype(a.dtype) for a in arrays)
    plan = _Plan()
    plan.shape, plan.n_arrays = shape, len(arrays)
    plan.param_values, plan.casts, plan.per_stage = [], [], []
    for _k, (op, params) in enumerate(stages):
        n_in = len(in_dtypes)
        if n_in > len(op._params):
            raise KernelError(f"{n_in} array(s) given but the function takes "
                              f"{len(op._params)} argument(s)", kernel=op.name)
        values = bind_params(op.name, op._params, params, n_in)
        promoted = dt_rules.promote_arrays(list(in_dtypes))
        pdts = tuple(dt_rules.param_dtype(v, promoted, p.name, op.name)
                     for v, p in zip(values, op._params[n_in:], strict=False))
        # a NumPy scalar parameter is strong: it takes part in the output's promotion
        strong = [d for v, d in zip(values, pdts, strict=True)
                  if isinstance(v, (np.generic, np.ndarray))]
        out = op.result_dtype(in_dtypes, pdts, np.result_type(promoted, *strong))
        plan.param_values += [np.asarray(v, dtype=d)[()]
                              for v, d in zip(values, pdts, strict=False)]
        plan.casts.append(out)
        plan.per_stage.append(len(values))
        in_dtypes = (out,)
    plan.out_dtype = in_dtypes[0]
    plan.key = (tuple(op._uid for op, _ in stages), plan.n_arrays, tuple(plan.per_stage),
                tuple(str(c) for c in plan.casts))
    return plan


def _loop(key: Any, make: Callable[[], Any]) -> Any:
    with _loops_lock:
        hit = _loops.get(key)
    if hit is None:
        hit = make()
        with _loops_lock:
            hit = _loops.setdefault(key, hit)
    return hit


def _name(stages) -> str:
    return "+".join(op.name for op, _ in stages)


def _run_cpu(stages, arrays: Sequence[Any]) -> np.ndarray:
    plan = _plan(stages, arrays)
    out = np.empty(plan.shape, dtype=plan.out_dtype)
    if out.size == 0:
        return out
    casts = [dt_rules.numba_type(c) for c in plan.casts]
    loop = _loop(("cpu",) + plan.key, lambda: cpu_backend.elementwise_loop(
        [op.scalar_cpu() for op, _ in stages], casts, plan.n_arrays, plan.per_stage))
    # a view is copied to contiguous memory: the flat loop then streams through it
    flats = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    try:
        loop(out.reshape(-1), *flats, *plan.param_values)
    except _numba_errors() as exc:
        raise _compile_error(_name(stages), exc, "cpu") from exc
    return out


def _run_gpu(stages, arrays: Sequence[Any], stream: Any) -> Any:
    from numba import cuda

    arrays = [cuda_backend.as_device_array(a) for a in arrays]
    plan = _plan(stages, arrays)
    with cuda_guard():
        out = cuda.device_array(plan.shape, dtype=plan.out_dtype, stream=stream)
    if out.size == 0:
        return out
    contiguous = all(a.is_c_contiguous() for a in arrays)
    ndim = None if contiguous else len(plan.shape)
    casts = [dt_rules.numba_type(c) for c in plan.casts]
    kern = _loop(("gpu", ndim) + plan.key, lambda: cuda_backend.elementwise_kernel(
        [op.scalar_cuda() for op, _ in stages], casts, plan.n_arrays, plan.per_stage, ndim))
    if contiguous:
        ins = [a.reshape(a.size) for a in arrays]
        target = out.reshape(out.size)
    else:  # strided views are indexed in place, element by element
        ins, target = arrays, out
    blocks, threads = cuda_backend.launch_config((out.size,), flat=True)
    try:
        with cuda_guard():
            kern[blocks, threads, stream](target, *ins, *plan.param_values)
    except _numba_errors() as exc:
        raise _compile_error(_name(stages), exc, "gpu") from exc
    except (IndexError, TypeError, ValueError, ArithmeticError) as exc:  # simulator: Python
        raise _compile_error(_name(stages), exc, "gpu") from exc
    return out
