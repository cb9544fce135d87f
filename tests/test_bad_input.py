"""The bad input catalogue: each kind of bad input tried, and the error it gets.

One test per row of the table in RELIABILITY.md. Every run here must also
leave no thread and no parked channel operation (the autouse fixture).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import flowgpu as fg
from flowgpu.kernels import image


def _run_one(items, fn, **opts):
    g = fg.Graph()
    g.source(items).map(fn, name="stage", **opts).collect("o")
    return g.run(device="cpu")


# -- kernels -----------------------------------------------------------------------------
def test_kernel_given_a_non_array():
    with pytest.raises(fg.StageError) as info:
        _run_one(["text"], image.gain, k=2.0)
    assert isinstance(info.value, fg.KernelError) and info.value.stage == "stage"


def test_kernel_given_none():
    with pytest.raises(fg.KernelError, match="gain"):
        _run_one([None], image.gain, k=2.0)


def test_kernel_given_a_python_list():
    with pytest.raises(fg.KernelError):
        _run_one([[1.0, 2.0]], image.gain, k=2.0)


def test_kernel_given_an_object_array():
    with pytest.raises(fg.KernelError):
        _run_one([np.array([object(), object()])], image.gain, k=2.0)


def test_kernel_given_a_string_dtype_array():
    with pytest.raises(fg.KernelError):
        _run_one([np.array(["a", "b"])], image.gain, k=2.0)


def test_kernel_given_the_wrong_number_of_dimensions():
    with pytest.raises(fg.KernelError, match="grayscale"):
        _run_one([np.ones((4,), np.float32)], image.grayscale)


def test_kernel_given_an_unknown_parameter():
    with pytest.raises(fg.KernelError, match="unknown parameter"):
        image.gain(np.ones(3, np.float32), kk=2.0, device="cpu")


def test_kernel_missing_a_parameter():
    with pytest.raises(fg.KernelError, match="missing parameter"):
        image.resize(np.ones((4, 4, 3), np.float32), height=2, device="cpu")


def test_kernel_stage_fed_by_batches_of_lists():
    g = fg.Graph()
    g.source([np.ones(3)]).batch(2).map(image.gain, k=2.0).collect("o")
    with pytest.raises(fg.GraphError, match="lists"):
        g.run()


def test_kernel_on_a_missing_gpu():
    g = fg.Graph()
    g.source([np.ones(3, np.float32)]).map(image.gain, k=2.0, device="gpu").collect("o")
    try:
        import numba.cuda

        if numba.cuda.is_available():
            pytest.skip("a GPU (or the simulator) is present")
    except ImportError:
        pass
    with pytest.raises(fg.DeviceUnavailable):
        g.run()


# -- graph building ----------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [-1, 1.5, "8", True])
def test_invalid_capacity(capacity):
    with pytest.raises(fg.GraphError, match="capacity"):
        fg.Graph().source([1]).map(abs, capacity=capacity)


@pytest.mark.parametrize("workers", [0, -2, 2.0, True])
def test_invalid_workers(workers):
    with pytest.raises(fg.GraphError, match="workers"):
        fg.Graph().source([1]).map(abs, workers=workers)


def test_unknown_stage_option():
    with pytest.raises(fg.GraphError, match="unknown option"):
        fg.Graph().source([1]).map(abs, worker=2)


def test_unknown_on_error_policy():
    with pytest.raises(fg.GraphError, match="on_error"):
        fg.Graph().source([1]).map(abs, on_error="ignore")


def test_stage_function_not_callable():
    with pytest.raises(fg.GraphError, match="takes a function"):
        fg.Graph().source([1]).map(42)


def test_source_not_iterable():
    with pytest.raises(fg.GraphError, match="iterable"):
        fg.Graph().source(42)


def test_source_function_needing_arguments():
    with pytest.raises(fg.GraphError, match="no arguments"):
        fg.Graph().source(lambda n: range(n))


def test_batch_size_invalid():
    with pytest.raises(fg.GraphError, match="batch size"):
        fg.Graph().source([1]).batch(0)


def test_stream_not_consumed():
    g = fg.Graph()
    g.source([1]).map(abs)
    with pytest.raises(fg.GraphError, match="not consumed"):
        g.run()


def test_empty_graph():
    with pytest.raises(fg.GraphError, match="no stages"):
        fg.Graph().run()


def test_zip_of_one_stream():
    with pytest.raises(fg.GraphError, match="two or more"):
        fg.zip(fg.Graph().source([1]))


def test_stream_of_another_graph():
    a, b = fg.Graph("a"), fg.Graph("b")
    with pytest.raises(fg.GraphError, match="belongs to graph"):
        a.source([1]).merge(b.source([2]))


def test_duplicate_stage_names():
    g = fg.Graph()
    s = g.source([1]).map(abs, name="x")
    with pytest.raises(fg.GraphError, match="two stages"):
        s.map(abs, name="x")


# -- run options --------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_invalid_run_timeout(timeout):
    g = fg.Graph()
    g.source([1]).collect("o")
    with pytest.raises(ValueError, match="timeout"):
        g.run(timeout=timeout)


def test_unknown_run_option():
    g = fg.Graph()
    g.source([1]).collect("o")
    with pytest.raises(TypeError):
        g.run(workers=4)


def test_unknown_device_name():
    g = fg.Graph()
    g.source([np.ones(2)]).map(image.gain, k=1.0).collect("o")
    with pytest.raises((ValueError, fg.FlowError)):
        g.run(device="tpu")


def test_zero_timeout_is_an_immediate_deadline():
    g = fg.Graph()
    g.source(range(5)).collect("o")
    with pytest.raises(fg.DeadlineExceeded):
        g.run(timeout=0)


# -- sources and items --------------------------------------------------------------------
def test_empty_source_runs_to_an_empty_result():
    g = fg.Graph()
    g.source([]).map(abs, workers=3).collect("o")
    assert g.run()["o"] == []


def test_one_shot_iterator_run_twice():
    g = fg.Graph()
    g.source(iter([1, 2])).collect("o")
    assert g.run()["o"] == [1, 2]
    with pytest.raises(fg.GraphError, match="one-shot"):
        g.run()


def test_broken_file_in_a_source(tmp_path):
    path = tmp_path / "broken.npy"
    path.write_bytes(b"\x93NUMPY not really")

    def arrays():
        yield np.load(path)

    g = fg.Graph()
    g.source(arrays, name="files").collect("o")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "files" and isinstance(info.value.__cause__, ValueError)


def test_missing_file_in_a_stage(tmp_path):
    with pytest.raises(fg.StageError) as info:
        _run_one([tmp_path / "nope.npy"], np.load)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_source_iterator_whose_close_raises():
    class Closing:
        def __init__(self):
            self.items = iter([1, 2])

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.items)

        def close(self):
            raise RuntimeError("close failed")

    g = fg.Graph()
    g.source(Closing, name="src").collect("o")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "src" and isinstance(info.value.__cause__, RuntimeError)


def test_items_whose_dunders_raise_flow_untouched():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("repr")

        def __eq__(self, other):
            raise RuntimeError("eq")

        def __bool__(self):
            raise RuntimeError("bool")

        def __len__(self):
            raise RuntimeError("len")

        __hash__ = None

        def nbytes(self):  # a method, not an array's int
            return 1

    items = [Hostile() for _ in range(6)]
    g = fg.Graph()
    s = g.source(items)
    s.map(lambda x: x, workers=2, ordered=False).merge(s.map(lambda x: x)).collect("o")
    out = g.run(max_inflight_bytes=1000)["o"]
    assert len(out) == 12 and all(isinstance(x, Hostile) for x in out)


def test_item_whose_truth_raises_in_a_filter():
    class NoBool:
        def __bool__(self):
            raise ValueError("no truth")

    g = fg.Graph()
    g.source([1]).filter(lambda x: NoBool(), name="keep").collect("o")
    with pytest.raises(fg.StageError) as info:
        g.run()
    assert info.value.stage == "keep"


def test_numpy_array_as_a_filter_verdict():
    g = fg.Graph()
    g.source([np.arange(3)]).filter(lambda a: a > 0, name="keep").collect("o")
    with pytest.raises(fg.StageError, match="ambiguous"):
        g.run()


def test_unbatch_of_a_non_iterable():
    g = fg.Graph()
    g.source([1]).unbatch(name="ub").collect("o")
    with pytest.raises(fg.StageError, match="not iterable"):
        g.run()


def test_flat_map_returning_none():
    with pytest.raises(fg.StageError, match="not iterable"):
        g = fg.Graph()
        g.source([1]).flat_map(lambda x: None).collect("o")
        g.run()


def test_zip_of_streams_of_unequal_length():
    g = fg.Graph()
    s = g.source(range(4))
    fg.zip(s.filter(lambda x: x < 2), s.map(abs)).collect("o")
    with pytest.raises(fg.StageError, match="ended after"):
        g.run()


def test_system_exit_in_a_stage_ends_the_run_and_propagates():
    def bail(x):
        raise SystemExit(3)

    g = fg.Graph()
    g.source(range(5)).map(bail, workers=2).collect("o")
    with pytest.raises(SystemExit):
        g.run()


def test_stage_error_pickles_without_its_item():
    with pytest.raises(fg.StageError) as info:
        _run_one([1], lambda x: 1 / 0)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.stage == "stage" and str(again) == str(info.value)


# -- found while attacking the engine ----------------------------------------------------
def test_item_whose_shape_property_raises_still_gets_a_stage_error():
    class Shapeless:
        @property
        def shape(self):
            raise RuntimeError("no shape")

    with pytest.raises(fg.StageError):
        _run_one([Shapeless()], lambda x: 1 / 0)


def test_fg_kernel_is_the_decorator_after_importing_the_kernel_library():
    import subprocess
    import sys

    code = ("import flowgpu as fg, flowgpu.kernels; "
            "assert callable(fg.kernel), type(fg.kernel)")
    subprocess.run([sys.executable, "-c", code], check=True)
