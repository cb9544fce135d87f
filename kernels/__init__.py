"""The numeric kernel library: image and ETL kernels, each one written once.

Every kernel is a :class:`flowgpu.kernel.NumericOp` and runs on the CPU
(Numba parallel) and on CUDA; see :mod:`flowgpu.kernel` for how they are
called and how dtypes are chosen.
"""

from __future__ import annotations

from . import etl, image

__all__ = ["image", "etl"]
