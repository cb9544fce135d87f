"""The numeric kernel library: image and ETL kernels, each one written once.

Every kernel is a :class:`flowgpu.numeric.NumericOp` and runs on the CPU
(Numba parallel) and on CUDA; see :mod:`flowgpu.numeric` for how they are
called and how dtypes are chosen.
"""

from __future__ import annotations

from . import etl, image

__all__ = ["image", "etl"]

if __name__ != "flowgpu.kernels":
    # Imported as a top-level ``kernels`` (from the repository root). Numba's
    # on-disk cache records the module's name with each compiled kernel, so
    # one file imported under two names breaks the cache for the other
    # ("No module named 'kernels'" from another folder). Be flowgpu.kernels.
    import importlib as _importlib
    import sys as _sys

    for _name in __all__:
        _sys.modules[f"{__name__}.{_name}"] = _importlib.import_module(f"flowgpu.kernels.{_name}")
    _sys.modules[__name__] = _importlib.import_module("flowgpu.kernels")
