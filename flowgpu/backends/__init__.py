"""Backends that compile and run numeric kernels: ``cpu`` (Numba parallel) and ``cuda``.

:mod:`flowgpu.numeric` is the public surface; the modules here generate the
loops around a user's scalar or index function for one target each.
"""

# flowgpu.numeric defines the ops' base class and imports the op modules at its
# end; loading it first lets any op module be imported on its own.
from .. import numeric as _numeric  # noqa: E402, F401
