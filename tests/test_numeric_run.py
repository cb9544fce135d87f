"""Numeric stages inside runs, on the CPU target: placement, fusion, errors, pinning."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import flowgpu as fg
from flowgpu import config
from flowgpu.device import gpu_available
from flowgpu.kernels import image


@fg.elementwise
def gain(x, k):
    return x * k


@fg.elementwise
def offset(x, b):
    return x + b


def _arrays(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((5, 6), dtype=np.float32) for _ in range(n)]


def test_numeric_stage_matches_the_op_called_directly():
    xs = _arrays()
    g = fg.Graph("num")
    g.source(xs).map(gain, k=2.5).collect("o")
    rep = g.run(device="cpu")
    for x, y in zip(xs, rep["o"]):
        assert y.dtype == np.float32  # NEP 50: float32 array * Python float stays float32
        np.testing.assert_array_equal(y, gain(x, k=2.5, device="cpu"))
    assert rep.stages["gain"].device == "cpu"


def test_elementwise_chain_fuses_and_equals_unfused():
    xs = _arrays(seed=1)
    g = fg.Graph("fuse")
    g.source(xs).map(gain, k=3.0).map(offset, b=-1.0).map(gain, k=0.5, name="half").collect("o")
    fused = g.run(device="cpu")
    plain = g.run(device="cpu", fuse=False)
    assert fused.fused == [("gain", "offset", "half")]
    assert "gain+offset+half" in fused.stages
    for a, b in zip(fused["o"], plain["o"]):
        np.testing.assert_array_equal(a, b)


def test_fusion_stops_at_a_broadcast():
    g = fg.Graph("branch")
    s = g.source(_arrays()).map(gain, k=2.0)
    s.map(offset, b=1.0).collect("a")
    s.collect("b")
    rep = g.run(device="cpu")
    assert rep.fused == []
    np.testing.assert_array_equal(rep["a"][0], rep["b"][0] + np.float32(1.0))


def test_gpu_without_one_is_device_unavailable_before_anything_runs():
    started = threading.Event()

    def items():
        started.set()
        yield np.ones(3, np.float32)

    g = fg.Graph("nogpu")
    g.source(items).map(gain, k=2.0).collect("o")
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(fg.DeviceUnavailable) as info:
        g.run(device="gpu")
    assert info.value.reason
    assert not started.is_set()


def test_stage_device_overrides_run_device_and_env_decides_auto():
    g = fg.Graph("env")
    g.source(_arrays(1)).map(gain, k=2.0).collect("o")
    with config.override(device="cpu"):
        assert g.run(device="auto").stages["gain"].device == "cpu"


def test_kernel_error_names_stage_kernel_and_item():
    g = fg.Graph("bad")
    g.source([np.ones(3, np.float32), "text"]).map(gain, k=2.0, name="amplify").collect("o")
    with pytest.raises(fg.KernelError) as info:
        g.run(device="cpu")
    err = info.value
    assert isinstance(err, fg.StageError)
    assert (err.stage, err.kernel, err.item_index) == ("amplify", "gain", 1)
    # the partial report comes with the error; item 0 may or may not have
    # reached the collect before the failure cancelled the run
    assert len(err.report["o"]) <= 1
    for done in err.report["o"]:
        np.testing.assert_array_equal(done, np.full(3, 2.0, np.float32))


def test_numeric_stage_after_batch_is_refused_at_build_time():
    g = fg.Graph("lists")
    g.source(_arrays()).batch(2).map(gain, k=2.0).collect("o")
    with pytest.raises(fg.GraphError, match="lists"):
        g.run(device="cpu")


def test_unknown_kernel_parameter_is_a_kernel_error():
    g = fg.Graph("param")
    g.source(_arrays(1)).map(gain, k=2.0, q=1).collect("o")
    with pytest.raises(fg.KernelError, match="q"):
        g.run(device="cpu")


def test_image_kernels_as_stages_on_a_real_photo(kodak_dir):
    from PIL import Image

    img = np.asarray(Image.open(kodak_dir / "kodim23.png"))[:64, :96]
    g = fg.Graph("photo")
    f = g.source([img]).map(image.to_float)
    f.map(image.gaussian_blur, sigma=1.0).collect("blur")
    rep = g.run(device="cpu")
    from scipy import ndimage

    ref = np.stack([ndimage.gaussian_filter(img[..., c].astype(np.float64) / 255.0, 1.0,
                                            mode="nearest", truncate=4.0) for c in range(3)], -1)
    np.testing.assert_allclose(rep["blur"][0], ref, atol=1e-5)


# -- pinning ------------------------------------------------------------------------
def test_stage_cpus_pin_its_workers_and_not_the_caller():
    before = os.sched_getaffinity(0)
    seen = []
    g = fg.Graph("pin")
    g.source(range(8)).map(lambda x: seen.append(frozenset(os.sched_getaffinity(0))) or x,
                           workers=2, cpus={0}, name="pinned").collect("o")
    rep = g.run()
    assert set(seen) == {frozenset({0})}
    assert rep.stages["pinned"].cpus == frozenset({0})
    assert os.sched_getaffinity(0) == before


def test_cpus_not_allowed_is_a_graph_error_before_the_run():
    g = fg.Graph("badpin")
    g.source(range(3)).map(abs, cpus={4096}).collect("o")
    with pytest.raises(fg.GraphError, match="map|abs"):
        g.run()


def test_policy_on_a_single_node_machine_is_a_noop_that_says_so():
    if not fg.topology().is_single_node:
        pytest.skip("this machine has several NUMA nodes")
    g = fg.Graph("policy")
    g.source(range(3)).map(abs).collect("o")
    rep = g.run(pin="spread")
    assert rep.pinning.is_noop
    assert any("no-op" in note for note in rep.pinning.notes)
