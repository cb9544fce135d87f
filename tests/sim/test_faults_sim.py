"""Randomised fault injection through GPU stages, under the CUDA simulator.

The graphs of tests/faultlib.py with GPU blocks (a CPU map making arrays, one
or two ``@fg.elementwise`` stages on ``device="gpu"``, fused or not, a CPU map
back); a fault at a GPU stage is a poisoned (non-array) input. Besides what
the CPU harness checks, every pinned pool a run made must be closed and hold
no bytes when the run ends.
"""

from __future__ import annotations

import io
import os

from faultlib import make_case, run_many

BASE = int(os.environ.get("FLOWGPU_FAULT_SEED", "0"))


def _gpu_seeds(n: int) -> list[int]:
    seeds, s = [], BASE
    while len(seeds) < n:
        if any(st.kind == "gpu" for st in make_case(s, gpu=True).stages.values()):
            seeds.append(s)
        s += 1
    return seeds


def test_random_faults_through_gpu_stages():
    seeds = _gpu_seeds(20)
    log = io.StringIO()
    figures, failures = run_many(seeds, gpu=True, out=log)
    assert not failures, f"{len(failures)} bad run(s):\n{log.getvalue()}"
    assert (figures.hangs, figures.leaks, figures.lost, figures.duplicated) == (0, 0, 0, 0)
    assert figures.by_outcome["StageKernelError"] > 0  # a GPU stage fault was among them


# -- the GPU halves of the named reliability cases (tests/test_reliability_cases.py) --
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from faultlib import SIMULATOR  # noqa: E402

import flowgpu as fg  # noqa: E402
from flowgpu.kernels import etl, image  # noqa: E402
from flowgpu.numeric import kernel  # noqa: E402


def test_case10_device_items_stay_within_the_device_byte_budget():
    # small arrays (4 -> 4,000 elements): the simulator runs one Python call per thread
    budget, n = 20_000, 6
    g = fg.Graph()
    src = g.source(lambda: (np.ones(4, np.float32) for _ in range(n)))
    big = src.map(lambda a: np.ones(a.size * 1000, np.float32), name="grow")
    big.map(image.gain, k=2.0, name="g1").map(image.clip, name="g2").map(
        lambda a: float(a[0])).collect("o")
    rep = g.run(device="gpu", fuse=False, max_inflight_bytes=budget)
    assert rep["o"] == [1.0] * n
    item = 4 * 1000 * 4
    # a send into an empty channel always proceeds (the budget must not deadlock a
    # DAG): one item over the budget per channel that carries device items, here
    # the inputs of g1, g2 and g2's download
    assert 0 < rep.inflight_peak_bytes["device"] <= budget + item + 2 * 3 * item


def test_case12_gpu_stage_on_a_strided_slice_changes_only_those_elements():
    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    before = base.copy()
    view = base[1::2, ::3]

    def write_back(out):
        view[...] = out

    g = fg.Graph()
    g.source([view]).map(image.gain, k=2.0, device="gpu").sink(write_back)
    g.run()
    want = before.copy()
    want[1::2, ::3] *= 2
    np.testing.assert_array_equal(base, want)


def test_case13_empty_batches_through_gpu_stages_launch_nothing(monkeypatch):
    from flowgpu.backends import ops_elementwise

    launches = []
    real = ops_elementwise._loop
    monkeypatch.setattr(ops_elementwise, "_loop",
                        lambda *a, **k: launches.append(a[0]) or real(*a, **k))
    items = [np.zeros((0,), np.float32), np.zeros((0, 3), np.float32)]
    g = fg.Graph()
    g.source(items).map(image.gain, k=2.0, device="gpu").map(
        image.clip, device="gpu").collect("o")
    rep = g.run(fuse=False)
    assert [(a.shape, a.dtype) for a in rep["o"]] == [((0,), np.float32), ((0, 3), np.float32)]
    assert launches == []


@kernel(out="like:a")
def gather(out, i, a):
    out[i] = a[int(a[i])]


@pytest.mark.skipif(not SIMULATOR, reason="an out-of-bounds read only raises in the simulator")
def test_case14_device_fault_names_its_stage_and_no_later_batch_runs():
    later = []
    items = [np.zeros(4, np.float32) for _ in range(6)]
    items[2] = np.full(4, 1000.0, np.float32)  # reads far out of bounds on the device
    g = fg.Graph()
    g.source(items).map(gather, name="first", device="gpu").map(
        image.gain, k=2.0, name="second", device="gpu").sink(later.append)
    with pytest.raises(fg.KernelError) as info:
        g.run()
    assert isinstance(info.value, fg.StageError)
    assert info.value.stage in ("first", "first+second"), info.value
    assert "second" not in info.value.stage.split("+")[:1]
    assert len(later) <= 2


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.25], np.float32)


@pytest.mark.parametrize("op,params", [
    (image.gain, {"k": 2.0}), (image.gamma, {"g": 2.0}), (image.clip, {}),
    (image.normalise, {}), (image.normalise, {"std": 0.0}), (image.threshold, {}),
    (image.to_uint8, {}), (etl.delay_class, {})])
def test_case15_nan_and_inf_match_between_gpu_and_cpu_elementwise(op, params):
    with np.errstate(all="ignore"):
        want = op(SPECIALS, device="cpu", **params)
        got = op(SPECIALS, device="gpu", **params)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op,params", [(image.grayscale, {}), (image.gaussian_blur, {}),
                                       (image.sobel, {}),
                                       (image.resize, {"height": 3, "width": 5})])
def test_case15_nan_and_inf_match_between_gpu_and_cpu_index_kernels(op, params):
    img = np.full((6, 8, 3), 0.5, np.float32)
    img[2, 3, 1] = np.nan
    img[4, 6, 0] = np.inf
    with np.errstate(all="ignore"):
        want = op(img, device="cpu", **params)
        got = op(img, device="gpu", **params)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_case15_group_kernels_on_gpu_skip_nan_and_keep_inf():
    keys = np.array([0, 0, 1, 1, 2], np.int64)
    vals = np.array([1.0, np.nan, np.inf, 2.0, -np.inf])
    ok = ~np.isnan(vals)
    np.testing.assert_array_equal(etl.group_sum(keys, vals, n_groups=3, device="gpu"),
                                  np.bincount(keys[ok], vals[ok], minlength=3))
