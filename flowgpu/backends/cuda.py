"""The ``cuda`` backend: ``cuda.jit`` kernels generated around device functions.

``@vectorize(target="cuda")`` does not compile under the simulator, so every
kernel here is a generated ``cuda.jit`` function that calls the user's
function compiled with ``cuda.jit(device=True)``; it behaves the same on a
real GPU. Launches go through :func:`flowgpu.device.cuda_guard` (the
simulator breaks when two threads are in CUDA calls at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numba

from . import codegen
from .cpu import chain_source

__all__ = ["device_jit", "elementwise_kernel", "index_kernel", "launch_config",
           "is_device_array", "as_device_array"]

_THREADS_1D = 256
_BLOCK_2D = (16, 16)  # (x: last axis, y: first axis)
_BLOCK_3D = (8, 8, 4)


def _cuda():
    from numba import cuda  # imported late: importing numba.cuda probes the driver

    return cuda


def is_device_array(x: Any) -> bool:
    """A Numba device array, or anything exporting ``__cuda_array_interface__``."""
    return bool(getattr(x, "__cuda_ndarray__", False)) or hasattr(x, "__cuda_array_interface__")


def as_device_array(x: Any) -> Any:
    """A Numba device array viewing ``x`` (zero-copy for foreign CUDA arrays)."""
    if getattr(x, "__cuda_ndarray__", False):
        return x
    return _cuda().as_cuda_array(x)


def device_jit(fn: Callable) -> Callable:
    """The user's function compiled as a CUDA device function."""
    return _cuda().jit(device=True)(fn)


def _build_kernel(source: str, name: str, env: dict[str, Any], key: str) -> Callable:
    cuda = _cuda()
    py, has_file = codegen.build(source, name, {"cuda": cuda, **env}, key)
    # cache=True is honoured on a real GPU; the simulator does not cache
    return cuda.jit(cache=has_file and not _simulated())(py)


def _simulated() -> bool:
    from ..device import is_simulator

    return is_simulator()


def elementwise_kernel(fns: Sequence[Callable], casts: Sequence[numba.types.Type],
                       n_arrays: int, params_per_stage: Sequence[int],
                       ndim: int | None) -> Callable:
    """``kernel[grid, block, stream](out, *arrays, *params)``, one thread per element.

    ``ndim=None``: all arrays are flat and contiguous. Otherwise the arrays
    are ``ndim``-dimensional and may be strided: each thread unravels its flat
    index into ``ndim`` indices of the (C-ordered) output.
    """
    if ndim is None:
        element, unravel = "i", []
    else:
        element = ", ".join(f"i{d}" for d in range(ndim))
        unravel = ["r = i"]
        for d in range(ndim - 1, 0, -1):
            unravel += [f"i{d} = r % out.shape[{d}]", f"r = r // out.shape[{d}]"]
        unravel.append("i0 = r")
    signature, chain = chain_source(n_arrays, params_per_stage, element)
    body = "\n".join("        " + line for line in unravel + chain.splitlines())
    source = (f"def ew_cuda(out, {signature}):\n"
              f"    i = cuda.grid(1)\n"
              f"    if i < out.size:\n{body}\n"
              f"        out[{element}] = v\n")
    env: dict[str, Any] = {}
    for k, (fn, cast) in enumerate(zip(fns, casts, strict=False)):
        env[f"f{k}"], env[f"c{k}"] = fn, cast
    key = ",".join(codegen.fingerprint(getattr(f, "py_func", f)) for f in fns)
    key += "|" + ",".join(str(c) for c in casts)
    return _build_kernel(source, "ew_cuda", env, key)


def index_kernel(fn: Callable, ndim: int, n_arrays: int, n_params: int) -> Callable:
    """``kernel[grid, block, stream](out, n0.., *arrays, *params)``, one thread per index
    of the index space ``n0..`` (usually ``out.shape``).

    The last axis maps to ``threadIdx.x`` so that neighbouring threads touch
    neighbouring memory (coalesced loads and stores).
    """
    if ndim not in (1, 2, 3):
        raise ValueError(f"index kernels support 1 to 3 output dimensions, not {ndim}")
    args = ", ".join([f"a{j}" for j in range(n_arrays)] + [f"p{j}" for j in range(n_params)])
    idx = [f"i{d}" for d in range(ndim)]
    sizes = ", ".join(f"n{d}" for d in range(ndim))
    lines = [f"def ix_cuda(out, {sizes}, {args}):" if args else f"def ix_cuda(out, {sizes}):"]
    if ndim == 1:
        lines.append("    i0 = cuda.grid(1)")
    else:
        lines.append(f"    g = cuda.grid({ndim})")
        lines += [f"    i{d} = g[{ndim - 1 - d}]" for d in range(ndim)]
    bounds = " and ".join(f"i{d} < n{d}" for d in range(ndim))
    call_args = ", ".join(["out", *idx] + ([args] if args else []))
    lines += [f"    if {bounds}:", f"        f({call_args})"]
    key = codegen.fingerprint(getattr(fn, "py_func", fn))
    return _build_kernel("\n".join(lines) + "\n", "ix_cuda", {"f": fn}, key)


def launch_config(shape: tuple[int, ...], flat: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(blocks, threads)`` covering ``shape`` (flat: one thread per element)."""
    def blocks(n: int, b: int) -> int:
        return (n + b - 1) // b

    if flat or len(shape) == 1:
        size = 1
        for n in shape:
            size *= n
        return (blocks(size, _THREADS_1D),), (_THREADS_1D,)
    rev = tuple(reversed(shape))  # axis 0 of the grid is the array's last axis
    block = _BLOCK_2D if len(shape) == 2 else _BLOCK_3D
    return tuple(blocks(n, b) for n, b in zip(rev, block, strict=False)), block
