"""Backends that compile and run numeric kernels: ``cpu`` (Numba parallel) and ``cuda``.

:mod:`flowgpu.numeric` is the public surface; the modules here generate the
loops around a user's scalar or index function for one target each.
"""
