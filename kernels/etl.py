"""ETL kernels on columns (1-D arrays): derived columns, masked filters, group-by.

Group-by reductions take integer keys in ``[0, n_groups)`` (rows with other
keys are ignored) and run in two phases, as the histogram does: partial
results per chunk of rows, each chunk owning its row of groups, then a
combine over the chunks. NaN values are skipped (pandas' ``skipna``);
a group with no value has sum 0, count 0, and NaN mean, min and max.
"""

from __future__ import annotations

import math

import numpy as np

from flowgpu.errors import KernelError
from flowgpu.numeric import array_stage, composite, elementwise, kernel

__all__ = ["delay_class", "speed_mph", "compact", "group_sum", "group_count", "group_mean",
           "group_min", "group_max"]


@elementwise(out_dtype=np.int8)
def delay_class(dep_delay):
    """-1 unknown (NaN), 0 early or on time (<= 0 min), 1 minor (< 15), 2 late (< 60),
    3 severe (>= 60)."""
    if dep_delay != dep_delay:
        return -1
    if dep_delay <= 0:
        return 0
    if dep_delay < 15:
        return 1
    if dep_delay < 60:
        return 2
    return 3


@elementwise
def speed_mph(distance, air_time):
    """Miles per hour from miles and minutes; ``air_time`` 0 gives inf (IEEE), NaN stays NaN.
    The dtype is NumPy's for ``distance / (air_time / 60.0)`` (float64 for int columns)."""
    return distance / (air_time / 60.0)


@array_stage
def compact(xp, mask, *cols):
    """The rows where ``mask`` is true: one array, or a tuple for several columns."""
    out = tuple(c[mask] for c in cols)
    return out[0] if len(out) == 1 else out


_ROWS_PER_CHUNK = 65536


def _chunks(n: int) -> int:
    return (n + _ROWS_PER_CHUNK - 1) // _ROWS_PER_CHUNK


def _partial_spec(keys, values, n_groups, chunk):
    return (_chunks(keys.shape[0]), n_groups), np.float64


@kernel(out=_partial_spec, grid=lambda keys, values, n_groups, chunk: (_chunks(keys.shape[0]),))
def _part_sum_count(out, k, keys, values, n_groups, chunk):
    # out[k, g] is the sum, for count a values array of ones is passed
    for g in range(n_groups):
        out[k, g] = 0.0
    for p in range(k * chunk, min((k + 1) * chunk, keys.shape[0])):
        g = keys[p]
        v = values[p]
        if 0 <= g < n_groups and v == v:
            out[k, g] += v


@kernel(out=_partial_spec, grid=lambda keys, values, n_groups, chunk: (_chunks(keys.shape[0]),))
def _part_min(out, k, keys, values, n_groups, chunk):
    for g in range(n_groups):
        out[k, g] = math.nan
    for p in range(k * chunk, min((k + 1) * chunk, keys.shape[0])):
        g = keys[p]
        v = values[p] * 1.0
        if 0 <= g < n_groups and v == v:
            cur = out[k, g]
            if cur != cur or v < cur:
                out[k, g] = v


@kernel(out=_partial_spec, grid=lambda keys, values, n_groups, chunk: (_chunks(keys.shape[0]),))
def _part_max(out, k, keys, values, n_groups, chunk):
    for g in range(n_groups):
        out[k, g] = math.nan
    for p in range(k * chunk, min((k + 1) * chunk, keys.shape[0])):
        g = keys[p]
        v = values[p] * 1.0
        if 0 <= g < n_groups and v == v:
            cur = out[k, g]
            if cur != cur or v > cur:
                out[k, g] = v


@kernel(out=lambda part, n_groups, how: ((n_groups,), np.float64))
def _combine(out, g, part, n_groups, how):
    # how: 0 sum, 1 min, 2 max (NaN = no value in that chunk)
    acc = 0.0 if how == 0 else math.nan
    for k in range(part.shape[0]):
        v = part[k, g]
        if how == 0:
            acc += v
        elif v == v and (acc != acc or (how == 1 and v < acc) or (how == 2 and v > acc)):
            acc = v
    out[g] = acc


@elementwise
def _is_value(v):
    return 0.0 if v != v else 1.0


@elementwise
def _mean(total, count):
    return total / count if count > 0 else math.nan


def _check(keys, values, n_groups, name):
    if np.dtype(keys.dtype).kind not in "iu":
        raise KernelError(f"keys must be integers, got {keys.dtype}", kernel=name)
    if keys.ndim != 1 or values.ndim != 1 or keys.shape != values.shape:
        raise KernelError(f"keys and values must be 1-D columns of one length, got "
                          f"{keys.shape} and {values.shape}", kernel=name)
    if int(n_groups) < 0:
        raise KernelError(f"n_groups must be >= 0, got {n_groups}", kernel=name)


def _reduce(run, part_op, how, keys, values, n_groups):
    n_groups = int(n_groups)
    part = run(part_op, keys, values, n_groups=n_groups, chunk=_ROWS_PER_CHUNK)
    return run(_combine, part, n_groups=n_groups, how=how)


@composite
def group_sum(run, keys, values, n_groups):
    """Sum of ``values`` per key (float64, NaN skipped), like ``np.bincount(keys, values)``."""
    _check(keys, values, n_groups, "group_sum")
    return _reduce(run, _part_sum_count, 0, keys, values, n_groups)


@composite
def group_count(run, keys, values, n_groups):
    """Number of non-NaN ``values`` per key (float64 counts, as pandas ``count``)."""
    _check(keys, values, n_groups, "group_count")
    return _reduce(run, _part_sum_count, 0, keys, run(_is_value, values), n_groups)


@composite
def group_mean(run, keys, values, n_groups):
    """Mean of the non-NaN ``values`` per key; NaN for an empty group."""
    _check(keys, values, n_groups, "group_mean")
    total = _reduce(run, _part_sum_count, 0, keys, values, n_groups)
    count = _reduce(run, _part_sum_count, 0, keys, run(_is_value, values), n_groups)
    return run(_mean, total, count)


@composite
def group_min(run, keys, values, n_groups):
    """Minimum of the non-NaN ``values`` per key (float64); NaN for an empty group."""
    _check(keys, values, n_groups, "group_min")
    return _reduce(run, _part_min, 1, keys, values, n_groups)


@composite
def group_max(run, keys, values, n_groups):
    """Maximum of the non-NaN ``values`` per key (float64); NaN for an empty group."""
    _check(keys, values, n_groups, "group_max")
    return _reduce(run, _part_max, 2, keys, values, n_groups)
