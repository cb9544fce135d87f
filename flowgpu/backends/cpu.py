"""The ``cpu`` backend: Numba ``parallel=True`` loops around a user's function.

Outputs are allocated by the caller with NumPy and passed in (allocating
inside the jitted function was 2-3x slower on large arrays: NumPy asks for
huge pages, Numba's allocator does not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numba
from numba import njit, prange

from . import codegen

__all__ = ["elementwise_loop", "index_loop", "scalar_jit"]


def scalar_jit(fn: Callable) -> Callable:
    """The user's scalar or index function compiled for the CPU (inlined by callers)."""
    # error_model="numpy": x / 0.0 is inf or NaN (IEEE), as in NumPy and CUDA,
    # not Python's ZeroDivisionError
    return njit(cache=_can_cache(fn), error_model="numpy")(fn)


def _can_cache(fn: Callable) -> bool:
    # Numba caches functions that live in a real file; notebook cells and
    # exec'd code have none, and asking for cache=True there raises.
    code = getattr(fn, "__code__", None)
    return code is not None and not code.co_filename.startswith("<")


def chain_source(n_arrays: int, params_per_stage: Sequence[int], element: str) -> tuple[str, str]:
    """Source lines computing ``v`` = the fused chain of stages at ``element``.

    Stage 0 reads the arrays; each later stage takes the previous value. Every
    intermediate is cast to its stage's output dtype (``c{k}``), exactly as a
    store into that stage's unfused output array would, so fused and unfused
    results are bitwise equal.
    """
    args = [f"a{j}" for j in range(n_arrays)]
    params: list[str] = []
    lines = []
    for k, n_params in enumerate(params_per_stage):
        ps = [f"p{k}_{j}" for j in range(n_params)]
        params += ps
        inputs = [f"{a}[{element}]" for a in args] if k == 0 else ["v"]
        lines.append(f"v = c{k}(f{k}({', '.join(inputs + ps)}))")
    return ", ".join(args + params), "\n".join(lines)


def elementwise_loop(fns: Sequence[Callable], casts: Sequence[numba.types.Type],
                     n_arrays: int, params_per_stage: Sequence[int]) -> Callable:
    """A parallel loop over flat, contiguous arrays: ``loop(out, *arrays, *params)``."""
    signature, chain = chain_source(n_arrays, params_per_stage, "i")
    body = "\n".join("        " + line for line in chain.splitlines())
    source = (f"def ew_cpu(out, {signature}):\n"
              f"    for i in prange(out.size):\n{body}\n"
              f"        out[i] = v\n")
    env = {"prange": prange}
    for k, (fn, cast) in enumerate(zip(fns, casts, strict=False)):
        env[f"f{k}"], env[f"c{k}"] = fn, cast
    key = ",".join(codegen.fingerprint(getattr(f, "py_func", f)) for f in fns)
    key += "|" + ",".join(str(c) for c in casts)
    py, has_file = codegen.build(source, "ew_cpu", env, key)
    return njit(parallel=True, cache=has_file, error_model="numpy")(py)


def index_loop(fn: Callable, ndim: int, n_arrays: int, n_params: int) -> Callable:
    """``loop(out, n0.., *arrays, *params)``: ``fn(out, i0.., *arrays, *params)`` per index.

    ``n0..`` are the sizes of the index space (usually ``out.shape``).

    The outer axis is a ``prange``; the inner axes are plain loops, so that a
    thread walks contiguous memory.
    """
    args = ", ".join([f"a{j}" for j in range(n_arrays)] + [f"p{j}" for j in range(n_params)])
    idx = ", ".join(f"i{d}" for d in range(ndim))
    sizes = ", ".join(f"n{d}" for d in range(ndim))
    lines = [f"def ix_cpu(out, {sizes}, {args}):" if args else f"def ix_cpu(out, {sizes}):"]
    for d in range(ndim):
        loop = "prange" if d == 0 else "range"
        lines.append("    " * (d + 1) + f"for i{d} in {loop}(n{d}):")
    call_args = ", ".join(x for x in ("out", idx, args) if x)
    lines.append("    " * (ndim + 1) + f"f({call_args})")
    source = "\n".join(lines) + "\n"
    key = codegen.fingerprint(getattr(fn, "py_func", fn))
    py, has_file = codegen.build(source, "ix_cpu", {"prange": prange, "f": fn}, key)
    return njit(parallel=True, cache=has_file, error_model="numpy")(py)
