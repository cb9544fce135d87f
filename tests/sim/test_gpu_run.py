"""Device segments inside a run, under the CUDA simulator.

The simulator runs streams synchronously, so these check placement, data
flow, events and the release of every buffer, not overlap (that is
`make gpu-check`'s job on a real GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

import flowgpu as fg
from flowgpu.backends.cuda import is_device_array
from flowgpu.device import gpu_available
from flowgpu.kernels import image
from flowgpu.runtime import gpu as gpu_runtime

# Under the simulator in CI; on a real GPU in `make gpu-check` (--real-gpu).
pytestmark = pytest.mark.skipif(not gpu_available(), reason="needs NUMBA_ENABLE_CUDASIM=1 or a GPU")


@fg.elementwise
def gain(x, k):
    return x * k


@fg.elementwise
def clip01(x):
    return min(max(x, 0.0), 1.0)


@fg.elementwise
def fail_on_negative(x):
    return x


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((6, 7, 3), dtype=np.float32) for _ in range(n)]


def test_segment_keeps_data_on_device_and_matches_cpu():
    xs = _images(3)
    g = fg.Graph("seg")
    s = g.source(xs).map(gain, k=1.5).map(clip01).map(image.gaussian_blur, sigma=1.0)
    s.collect("out")
    rep = g.run(device="gpu")
    ref = g.run(device="cpu")
    names = list(rep.stages)
    # one upload at the entry, one download at the exit, nothing between
    assert names.count("gain+clip01.upload") == 1
    assert [n for n in names if n.endswith(".download")] == ["gaussian_blur.download"]
    assert rep.stages["gain+clip01"].device == "gpu"
    for got, want in zip(rep["out"], ref["out"]):
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_consumer_stream_waits_on_producer_event(monkeypatch):
    waits = []
    real_wait = gpu_runtime.DeviceItem.wait_on

    def spy(self, stream):
        waits.append((self.ready is not None, stream))
        return real_wait(self, stream)

    monkeypatch.setattr(gpu_runtime.DeviceItem, "wait_on", spy)
    g = fg.Graph("events")
    g.source(_images(2)).map(gain, k=2.0).map(image.gaussian_blur, sigma=0.5).collect("o")
    g.run(device="gpu", fuse=False)
    # every GPU stage and the download waited on an event, each on its own stream
    assert len(waits) >= 2 * 3
    assert all(has_event for has_event, _ in waits)
    assert len({id(s) for _, s in waits}) >= 3


def test_fusion_on_gpu_equals_unfused():
    xs = _images(2, seed=3)
    g = fg.Graph("fuse")
    g.source(xs).map(gain, k=3.0).map(clip01).collect("o")
    fused = g.run(device="gpu")
    plain = g.run(device="gpu", fuse=False)
    assert fused.fused == [("gain", "clip01")]
    assert plain.fused == []
    for a, b in zip(fused["o"], plain["o"]):
        np.testing.assert_array_equal(a, b)


def test_collect_on_device_keeps_device_arrays():
    g = fg.Graph("dev")
    g.source(_images(2)).map(gain, k=2.0).collect("d", on="device")
    rep = g.run(device="gpu")
    assert all(is_device_array(a) for a in rep["d"])
    np.testing.assert_allclose(rep["d"][0].copy_to_host(), _images(2)[0] * 2.0, rtol=1e-6)


def test_mixed_cpu_and_gpu_stages():
    g = fg.Graph("mixed")
    s = g.source(range(3)).map(lambda i: _images(3)[i])
    s = s.map(gain, k=2.0).map(lambda a: float(a.sum())).map(np.float32)
    s.collect("sums")
    rep = g.run(device="gpu")
    want = [np.float32(float((x * 2.0).sum())) for x in _images(3)]
    np.testing.assert_allclose(rep["sums"], want, rtol=1e-5)


def test_kernel_error_names_stage_and_kernel_and_releases_pool(monkeypatch):
    pools = []
    real_pool = gpu_runtime.PinnedPool

    def track(*a, **k):
        pool = real_pool(*a, **k)
        pools.append(pool)
        return pool

    monkeypatch.setattr(gpu_runtime, "PinnedPool", track)
    g = fg.Graph("bad")
    g.source([np.ones(4, np.float32), "not an array"]).map(gain, k=2.0, name="amplify").collect("o")
    with pytest.raises(fg.KernelError) as info:
        g.run(device="gpu")
    err = info.value
    assert isinstance(err, fg.StageError)
    assert err.stage in ("amplify", "amplify.upload")
    assert pools and all(p.closed and p.allocated_bytes == 0 for p in pools)


def test_zero_size_batches_through_gpu():
    g = fg.Graph("empty")
    g.source([np.zeros((0,), np.float32), np.zeros((0, 3), np.float32)]).map(
        gain, k=2.0).collect("o")
    rep = g.run(device="gpu")
    assert [a.shape for a in rep["o"]] == [(0,), (0, 3)]


def test_gpu_run_can_run_again_and_leaves_nothing():
    g = fg.Graph("again")
    g.source(_images(2)).map(gain, k=2.0).collect("o")
    first = g.run(device="gpu")["o"]
    second = g.run(device="gpu")["o"]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
