"""How a numeric op chooses its argument and output dtypes (NumPy's NEP 50 rules).

The same rules run for both targets, on the host, before anything compiles,
so that the CPU and the GPU produce the same dtype for the same call.

Arguments
    An array element has its array's dtype. A Python scalar parameter
    (``bool``, ``int``, ``float``, ``complex``) is *weak*: it takes
    ``np.result_type(P, value)`` where ``P`` is the promoted dtype of the
    array inputs, so that ``k=2.0`` next to a float32 array is a float32
    (an ``int`` that does not fit ``P`` raises, as NumPy does). A NumPy
    scalar or 0-d array is *strong* and keeps its own dtype.

Output (``@elementwise``)
    Numba infers the scalar function's return type ``R`` for those argument
    types. Numba types a literal in the body (``1.0``, ``1``) as 64-bit where
    NumPy treats it as weak, so when ``R`` is of the same category (bool,
    integer, float, complex) as ``P`` (now also promoted with the strong
    parameters) the output dtype is ``P``; otherwise it
    is ``R`` (an integer divided by an integer gives float64, a comparison
    gives bool). ``out_dtype=`` on the decorator overrides the rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba.np import numpy_support

from ..errors import KernelError

__all__ = ["promote_arrays", "param_dtype", "output_dtype", "numba_type", "check_dtype"]

_CATEGORY = {"b": "int", "i": "int", "u": "int", "f": "float", "c": "complex"}


def check_dtype(dtype: np.dtype, what: str, kernel: str) -> None:
    if dtype.kind not in "biufc":
        raise KernelError(f"{what} has dtype {dtype}; numeric kernels take bool, integer, "
                          "float or complex arrays", kernel=kernel)
    if dtype == np.float16:  # Numba compiles no float16 arithmetic on the CPU
        raise KernelError(f"{what} has dtype float16, which Numba cannot compile; "
                          "convert it with .astype(np.float32)", kernel=kernel)


def promote_arrays(dtypes: list[np.dtype]) -> np.dtype:
    return np.result_type(*dtypes)


def param_dtype(value: Any, promoted: np.dtype, name: str, kernel: str) -> np.dtype:
    """The dtype a scalar parameter is passed as (weak Python scalars, strong NumPy ones)."""
    if isinstance(value, (np.generic, np.ndarray)):
        dt = np.asarray(value).dtype
        if np.ndim(value) != 0 or dt.kind not in "biufc":
            raise KernelError(f"parameter {name!r} must be a number, got {type(value).__name__} "
                              f"{getattr(value, 'shape', '')}", kernel=kernel)
        return dt
    if not isinstance(value, (bool, int, float, complex)):
        raise KernelError(f"parameter {name!r} must be a number, got {type(value).__name__}",
                          kernel=kernel)
    dt = np.result_type(promoted, value)
    if isinstance(value, int) and not isinstance(value, bool) and dt.kind in "iu":
        info = np.iinfo(dt)
        if not info.min <= value <= info.max:
            raise KernelError(f"parameter {name!r}={value} does not fit the array dtype {dt} "
                              "(NumPy raises OverflowError for the same expression)",
                              kernel=kernel)
    return dt


def output_dtype(returned: np.dtype, promoted: np.dtype) -> np.dtype:
    """``P`` when the inferred return type is of ``P``'s category, else the return type."""
    if _CATEGORY.get(returned.kind) == _CATEGORY.get(promoted.kind):
        return promoted
    return returned


def numba_type(dtype: np.dtype):
    return numpy_support.from_dtype(np.dtype(dtype))


def as_dtype(nb_type, kernel: str) -> np.dtype:
    try:
        dt = numpy_support.as_dtype(nb_type)
    except Exception as exc:  # tuples, None, arrays: not a scalar
        raise KernelError(f"the function must return one number, but returns {nb_type}",
                          kernel=kernel) from exc
    if dt.kind not in "biufc":
        raise KernelError(f"the function must return a number, but returns {nb_type}",
                          kernel=kernel)
    return dt
