"""The numeric op layer on the CPU target: dtype rules, fusion, bad input, edge cases."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from flowgpu.errors import KernelError
from flowgpu.kernels import image
from flowgpu.numeric import NumericOp, array_stage, elementwise, fuse, kernel

RNG = np.random.default_rng(7)


@elementwise
def scale_add(x, k=2.0, b=0.5):
    return x * k + b


@elementwise
def add_one(x):
    return x + 1


@elementwise
def ratio(a, b):
    return a / b


@elementwise
def above(x, t=0.0):
    return x > t


@kernel(out="like:img", ndim={"img": 2})
def mirror(out, y, x, img):
    out[y, x] = img[y, img.shape[1] - 1 - x]


def test_op_interface():
    for op, kind, fusable in ((scale_add, "elementwise", True), (mirror, "kernel", False),
                              (image.resize, "kernel", False)):
        assert isinstance(op, NumericOp)
        assert (op.kind, op.fusable) == (kind, fusable)
    assert scale_add.name == "scale_add"


@pytest.mark.parametrize(("dtype", "params", "expected"), [
    (np.float32, {"k": 2.0, "b": 0.5}, np.float32),        # weak Python floats stay float32
    (np.float32, {"k": np.float64(2.0)}, np.float64),      # a NumPy scalar is strong
    (np.float64, {"k": 2, "b": 1}, np.float64),
    (np.int32, {"k": 3, "b": 1}, np.int32),                # weak ints keep int32
    (np.int32, {"k": 2.5}, np.float64),                    # int array * float -> float64
])
def test_dtype_rules_follow_numpy(dtype, params, expected):
    x = (RNG.random(50) * 10).astype(dtype)
    got = scale_add(x, device="cpu", **params)
    ref = x * params.get("k", 2.0) + params.get("b", 0.5)
    assert got.dtype == ref.dtype == expected
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_dtype_integer_literal_and_division():
    u8 = np.array([0, 7, 255], dtype=np.uint8)
    got = add_one(u8, device="cpu")
    assert got.dtype == np.uint8 and list(got) == list(u8 + np.uint8(1))  # wraps, as NumPy
    a, b = np.arange(1, 6, dtype=np.int16), np.full(5, 4, dtype=np.int16)
    assert ratio(a, b, device="cpu").dtype == (a / b).dtype == np.float64
    mixed = ratio(a.astype(np.float32), b.astype(np.float64), device="cpu")
    assert mixed.dtype == np.float64
    assert above(np.arange(-2, 3.0), device="cpu").dtype == np.bool_


def test_int_param_out_of_range_raises():
    with pytest.raises(KernelError, match="does not fit"):
        scale_add(np.zeros(3, dtype=np.uint8), k=300, device="cpu")


def test_fusion_equals_unfused_bitwise():
    x = RNG.random((31, 17)).astype(np.float32)
    stages = [(image.gain, {"k": 1.7}), (image.gamma, {"g": 2.2}), (image.clip, {})]
    fused = fuse(stages)
    assert fused.name == "gain+gamma+clip" and fused.parts == ("gain", "gamma", "clip")
    assert fused.fusable and fused.kind == "elementwise"
    ref = x
    for op, p in stages:
        ref = op(ref, device="cpu", **p)
    got = fused(x, device="cpu")
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    # params stay runtime arguments: other values reuse the compiled loop
    other = fuse([(image.gain, {"k": 0.5}), (image.gamma, {"g": 1.0}), (image.clip, {})])
    assert np.array_equal(other(x, device="cpu"), np.clip(x * np.float32(0.5), 0, 1))
    # overrides by part name
    assert np.array_equal(fused.run_cpu((x,), {"gain": {"k": 0.5}, 1: {"g": 1.0}}),
                          other(x, device="cpu"))


def test_fusion_with_dtype_changes_matches_unfused():
    x = (RNG.random(40) * 300).astype(np.int32)
    fused = fuse([(add_one, {}), (scale_add, {"k": 0.25}), (above, {"t": 20.0})])
    ref = above(scale_add(add_one(x, device="cpu"), k=0.25, device="cpu"), t=20.0,
                device="cpu")
    got = fused(x, device="cpu")
    assert got.dtype == np.bool_ and np.array_equal(got, ref)


def test_fuse_rejects_non_elementwise():
    with pytest.raises(KernelError):
        fuse([(image.gain, {}), (mirror, {})])


def test_zero_size():
    e = np.empty((0, 5), dtype=np.float32)
    assert scale_add(e, device="cpu").shape == (0, 5)
    assert mirror(e, device="cpu").shape == (0, 5)
    assert fuse([(image.gain, {}), (image.clip, {})])(e, device="cpu").shape == (0, 5)


def test_strided_and_negative_views():
    base = RNG.random((20, 30)).astype(np.float32)
    guard = base.copy()
    for view in (base[::2, ::-3], base[::-1], base.T):
        np.testing.assert_array_equal(scale_add(view, device="cpu"), view * 2.0 + 0.5)
        np.testing.assert_array_equal(mirror(view, device="cpu"), view[:, ::-1])
    assert np.array_equal(base, guard)  # inputs untouched


def test_nan_inf_ieee():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0], dtype=np.float32)
    y = np.array([1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ratio(x, y, device="cpu"), x / y)
        np.testing.assert_array_equal(image.clip(x, device="cpu"), np.clip(x, 0, 1))


def test_compile_error_is_kernel_error():
    @elementwise
    def bad(x):
        return {"a": x}[object()]

    with pytest.raises(KernelError, match="bad"):
        bad(np.ones(3), device="cpu")

    @kernel(out="like:img")
    def bad_kernel(out, i, img):
        out[i] = img[i].nonexistent

    with pytest.raises(KernelError, match="bad_kernel"):
        bad_kernel(np.ones(3), device="cpu")


def test_bad_input_is_kernel_error():
    x = np.ones((4, 4), dtype=np.float32)
    with pytest.raises(KernelError, match="unknown parameter"):
        scale_add(x, kk=2.0, device="cpu")
    with pytest.raises(KernelError, match="not an array"):
        scale_add.check(([1, 2],), {})
    with pytest.raises(KernelError, match="same shape"):
        ratio(x, np.ones(3), device="cpu")
    with pytest.raises(KernelError, match="dimensions"):
        mirror(np.ones((2, 2, 2)), device="cpu")
    with pytest.raises(KernelError, match="dimensions"):
        image.resize(np.ones(5, dtype=np.float32), height=2, width=2, device="cpu")
    with pytest.raises(KernelError, match="missing parameter"):
        image.resize(x, height=2, device="cpu")
    with pytest.raises(KernelError, match="dtype"):
        scale_add(np.array(["a"]), device="cpu")


def test_explicit_out_spec_and_grid():
    @kernel(out=((3,), np.int64))
    def iota(out, i):
        out[i] = i * 2

    assert list(iota(device="cpu")) == [0, 2, 4]


def test_array_stage_cpu():
    @array_stage
    def positive(xp, v, floor=0.0):
        return v[v > floor]

    v = RNG.normal(size=100)
    np.testing.assert_array_equal(positive(v, device="cpu"), v[v > 0])
    with pytest.raises(KernelError):
        positive(v, ceiling=1.0, device="cpu")


def test_ops_pickle_by_reference():
    assert pickle.loads(pickle.dumps(image.gain)) is image.gain
    assert pickle.loads(pickle.dumps(image.resize)) is image.resize
