"""The machine's topology, the pinning plans, and pinning itself.

Plans are checked exactly on fake sysfs trees (tests/fake_sysfs.py); pinning
is checked on this machine, with a thread that reports its own affinity.
"""

from __future__ import annotations

import os
import threading

import fake_sysfs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgpu.errors import GraphError
from flowgpu.numa import (
    POLICIES,
    NumaNode,
    StageSlot,
    call_on_cpus,
    format_cpulist,
    numba_threads_for,
    parse_cpulist,
    pin_current_thread,
    plan_pinning,
    topology,
)
from flowgpu.numa import sysfs as _sysfs

C = parse_cpulist  # plans below read as the kernel writes CPU lists

HAS_AFFINITY = hasattr(os, "sched_setaffinity")


# -- CPU lists -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0-3,8-11", {0, 1, 2, 3, 8, 9, 10, 11}),
        ("5", {5}),
        ("0-0", {0}),
        ("", set()),
        ("\n", set()),
        (" 1,3-4 \n", {1, 3, 4}),
        ("2,0-1,1", {0, 1, 2}),
        ("0-15:2/4", {0, 1, 4, 5, 8, 9, 12, 13}),
        ("8-13:1/3", {8, 11}),
    ],
)
def test_parse_cpulist(text, cpus):
    assert parse_cpulist(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["3-1", "1,,2", "-1", "a", "1-", "0-3:0/0", "0-7:3/2", ",1"])
def test_parse_cpulist_rejects(text):
    with pytest.raises(ValueError, match="bad CPU list"):
        parse_cpulist(text)


@given(st.frozensets(st.integers(0, 300)))
def test_format_parse_roundtrip(cpus):
    text = format_cpulist(cpus)
    assert parse_cpulist(text) == cpus
    assert " " not in text


def test_format_cpulist():
    assert format_cpulist({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert format_cpulist(set()) == ""


# -- reading fake machines -----------------------------------------------------


def test_laptop(tmp_path):
    topo = topology(fake_sysfs.laptop(tmp_path))
    assert len(topo.nodes) == 1
    node = topo.nodes[0]
    assert (node.id, node.cpus, node.memory_bytes, node.distances) == (
        0, C("0-7"), 16 * 2**30, (10,))
    assert topo.allowed_cpus == C("0-7")
    assert topo.is_single_node
    # the GPU's audio function and the Intel NIC are not GPUs
    [gpu] = topo.gpus
    assert (gpu.index, gpu.pci_bus_id, gpu.numa_node, gpu.cpus) == (
        0, "0000:01:00.0", None, C("0-7"))
    assert gpu.name == "NVIDIA device 0x28e0"
    assert topo.node_of_gpu(0) is None
    with pytest.raises(IndexError):
        topo.node_of_gpu(1)


def test_two_socket_server(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path))
    assert [(n.id, n.cpus, n.distances) for n in topo.nodes] == [
        (0, C("0-15"), (10, 21)), (1, C("16-31"), (21, 10))]
    assert [n.memory_bytes for n in topo.nodes] == [256 * 2**30] * 2
    assert topo.cpus == topo.allowed_cpus == C("0-31")
    assert not topo.is_single_node
    # CUDA's PCI_BUS_ID order, whatever order the directories come in
    assert [(g.index, g.pci_bus_id, g.numa_node) for g in topo.gpus] == [
        (i, bus, node) for i, (bus, node) in enumerate(fake_sysfs.SERVER_GPUS)]
    assert [g.cpus for g in topo.gpus] == [C("0-15")] * 4 + [C("16-31")] * 4
    assert topo.node_of_gpu(5).id == 1
    assert topo.notes == ()


def test_numa_node_minus_one(tmp_path):
    topo = topology(fake_sysfs.unknown_numa(tmp_path))
    assert [(g.numa_node, g.cpus) for g in topo.gpus] == [(None, C("0-7"))] * 2
    assert any("NUMA node unknown" in note for note in topo.notes)


def test_memory_only_node(tmp_path):
    topo = topology(fake_sysfs.memory_only_node(tmp_path))
    assert [(n.id, n.cpus, n.memory_bytes) for n in topo.nodes] == [
        (0, C("0-7"), 32 * 2**30), (1, frozenset(), 96 * 2**30)]
    assert topo.is_single_node  # only one node holds CPUs
    # the GPU hangs off the CPU-less node: its nearest CPUs are node 0's
    [gpu] = topo.gpus
    assert (gpu.pci_bus_id, gpu.numa_node, gpu.cpus) == ("0009:01:00.0", 1, C("0-7"))
    assert any("no allowed CPU" in note for note in topo.notes)


def test_cpulists_with_gaps(tmp_path):
    topo = topology(fake_sysfs.gappy(tmp_path))
    assert [n.cpus for n in topo.nodes] == [C("0-3,8-11"), C("4-7,12-15")]
    assert [(g.pci_bus_id, g.cpus) for g in topo.gpus] == [
        ("0000:3b:00.0", C("0-3,8-11")), ("0000:af:00.0", C("4-7,12-15"))]


def test_no_numa_directory(tmp_path):
    topo = topology(fake_sysfs.no_numa(tmp_path))
    [node] = topo.nodes
    assert node.cpus == topo.allowed_cpus == C("0-5")
    assert topo.gpus[0].numa_node == 0 and topo.gpus[0].cpus == C("0-5")
    assert "no NUMA information" in topo.notes[0]


def test_allowed_cpus_narrow_the_machine(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path), allowed_cpus=set(range(4, 20)) | {99})
    assert topo.allowed_cpus == C("4-19")  # 99 does not exist
    assert topo.cpus == C("0-31")
    assert [g.cpus for g in topo.gpus] == [C("4-15")] * 4 + [C("16-19")] * 4
    with pytest.raises(ValueError, match="names no CPU"):
        topology(tmp_path, allowed_cpus={64})


def test_cgroup_cpuset_narrows_allowed(tmp_path):
    root = fake_sysfs.two_socket_server(tmp_path, cgroup_v2="0-3,16-19")
    topo = topology(root)
    assert topo.allowed_cpus == C("0-3,16-19")
    assert topo.cpus == C("0-31")


def test_cgroup_v2_nested_path(tmp_path):
    root = fake_sysfs.build(tmp_path, [fake_sysfs.FakeNode("0-7")], cgroup_v2="2-5",
                            cgroup_path="/kubepods/pod1/ctr")
    assert topology(root).allowed_cpus == C("2-5")


def test_table(tmp_path):
    text = topology(fake_sysfs.two_socket_server(tmp_path)).table()
    lines = text.splitlines()
    assert lines[0] == "NUMA nodes: 2; CPUs allowed to this process: 0-31 (32 of 32)"
    assert lines[1].split() == ["node", "cpus", "allowed", "memory", "distances"]
    assert lines[2].split() == ["0", "0-15", "0-15", "256.0", "GiB", "10", "21"]
    assert "GPUs: 8" in lines
    assert lines[-1].split() == ["7", "NVIDIA", "device", "0x2330", "0000:db:00.0", "1", "16-31"]
    assert "?" in topology(fake_sysfs.unknown_numa(tmp_path / "u")).table()


def test_nvml_names_and_visible_devices(tmp_path):
    root = fake_sysfs.two_socket_server(tmp_path)
    nvml = [  # NVML's own spelling: 8-digit domain, upper-case hex
        (f"0000{bus.upper()}", f"NVIDIA H100 #{i}", f"GPU-{i:08x}-aaaa")
        for i, (bus, _node) in enumerate(fake_sysfs.SERVER_GPUS)
    ]
    hw = _sysfs._read_hardware(root, list(reversed(nvml)))
    topo = _sysfs._assemble(hw, C("0-31"), None)
    assert [(g.name, g.pci_bus_id, g.numa_node) for g in topo.gpus] == [
        (f"NVIDIA H100 #{i}", bus, node) for i, (bus, node) in enumerate(fake_sysfs.SERVER_GPUS)]

    picked = _sysfs._assemble(hw, C("0-31"), "5,GPU-00000001,5")
    assert [(g.index, g.pci_bus_id, g.cpus) for g in picked.gpus] == [
        (0, "0000:ab:00.0", C("16-31")), (1, "0000:2a:00.0", C("0-15"))]
    # CUDA stops at the first index that names no device
    assert len(_sysfs._assemble(hw, C("0-31"), "1,9,2").gpus) == 1
    assert _sysfs._assemble(hw, C("0-31"), "").gpus == ()
    mig = _sysfs._assemble(hw, C("0-31"), "MIG-1234")
    assert len(mig.gpus) == 8 and "not understood" in mig.notes[-1]


# -- plans ---------------------------------------------------------------------

# A pipeline: read -> decode -> upload to GPU g -> (segment) -> download -> save
def pipeline(up_gpu: int | None = 0, down_gpu: int | None = 5, **cpus) -> list[StageSlot]:
    return [
        StageSlot("read", 1, None, cpus.get("read")),
        StageSlot("decode", 4, None, cpus.get("decode")),
        StageSlot("upload", 2, up_gpu, cpus.get("upload")),
        StageSlot("download", 2, down_gpu, cpus.get("download")),
        StageSlot("save", 2, None, cpus.get("save")),
    ]


@pytest.fixture
def server(tmp_path):
    return topology(fake_sysfs.two_socket_server(tmp_path))


def test_plan_none(server):
    plan = plan_pinning(pipeline(), "none", server)
    assert plan.cpus == dict.fromkeys(["read", "decode", "upload", "download", "save"])
    assert plan.is_noop and plan.notes == []
    assert plan_pinning(pipeline(), None, server).cpus == plan.cpus


def test_plan_compact(server):
    plan = plan_pinning(pipeline(), "compact", server)
    assert plan.cpus == {
        "read": C("0"), "decode": C("1-4"), "upload": C("5-6"), "download": C("7-8"),
        "save": C("9-10"),
    }


def test_plan_spread(server):
    # 32 CPUs, weights 1,4,2,2,2: sizes 3,11,6,6,6, each a run of 0,16,1,17,...
    plan = plan_pinning(pipeline(), "spread", server)
    assert plan.cpus == {
        "read": C("0-1,16"), "decode": C("2-6,17-22"), "upload": C("7-9,23-25"),
        "download": C("10-12,26-28"), "save": C("13-15,29-31"),
    }


def test_plan_gpu_local_both_sockets(server):
    # GPU 0 is on socket 0, GPU 5 on socket 1: no CPU is left, so the CPU
    # stages spread over all 32 (sizes 5, 18, 9).
    plan = plan_pinning(pipeline(0, 5), "gpu-local", server)
    assert plan.cpus == {
        "read": C("0-2,16-17"), "decode": C("3-11,18-26"), "upload": C("0-15"),
        "download": C("16-31"), "save": C("12-15,27-31"),
    }
    assert plan.notes == ["every allowed CPU is near a GPU: the other stages share them"]


def test_plan_gpu_local_one_socket(server):
    # GPUs 0 and 3 are both on socket 0: the CPU stages get socket 1 (3, 8, 5 CPUs).
    plan = plan_pinning(pipeline(0, 3), "gpu-local", server)
    assert plan.cpus == {
        "read": C("16-18"), "decode": C("19-26"), "upload": C("0-15"),
        "download": C("0-15"), "save": C("27-31"),
    }
    assert plan.notes == []


def test_plan_gpu_local_every_gpu(server):
    stages = [StageSlot(f"feed{g}", 1, g, None) for g in range(8)]
    plan = plan_pinning(stages, "gpu-local", server)
    assert plan.cpus == {f"feed{g}": C("0-15" if g < 4 else "16-31") for g in range(8)}


def test_plan_with_allowed_cpus_smaller_than_machine(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path), allowed_cpus=C("0-7,16-23"))
    plan = plan_pinning(pipeline(0, 0), "gpu-local", topo)
    assert plan.cpus == {
        "read": C("16-17"), "decode": C("18-21"), "upload": C("0-7"), "download": C("0-7"),
        "save": C("22-23"),
    }
    plan = plan_pinning(pipeline(), "compact", topo)
    assert plan.cpus == {
        "read": C("0"), "decode": C("1-4"), "upload": C("5-6"), "download": C("7,16"),
        "save": C("17-18"),
    }
    for policy in POLICIES:
        cpus = plan_pinning(pipeline(), policy, topo).cpus.values()
        assert all(c is None or c <= topo.allowed_cpus for c in cpus)


def test_plan_cgroup_confined_to_one_socket(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path, cgroup_v2="16-31"))
    plan = plan_pinning(pipeline(), "gpu-local", topo)
    assert plan.is_noop
    assert plan.notes == ["gpu-local on a single-node machine: no-op"]


@pytest.mark.parametrize("policy", ["gpu-local", "spread", "compact"])
def test_plan_on_one_node_laptop_is_noop(tmp_path, policy):
    topo = topology(fake_sysfs.laptop(tmp_path))
    plan = plan_pinning(pipeline(0, 0), policy, topo)
    assert plan.is_noop
    assert plan.notes == [f"{policy} on a single-node machine: no-op"]
    # an explicit cpus= still holds there
    plan = plan_pinning(pipeline(0, 0, decode=C("2-3")), policy, topo)
    assert plan.cpus["decode"] == C("2-3")
    assert [k for k, v in plan.cpus.items() if v is not None] == ["decode"]


def test_plan_memory_only_node_is_single_node(tmp_path):
    topo = topology(fake_sysfs.memory_only_node(tmp_path))
    plan = plan_pinning(pipeline(0, 0), "gpu-local", topo)
    assert plan.is_noop and "single-node" in plan.notes[0]


def test_plan_gpu_local_unknown_numa(tmp_path):
    topo = topology(fake_sysfs.unknown_numa(tmp_path))
    plan = plan_pinning(pipeline(0, 1), "gpu-local", topo)
    # the GPUs claim nothing, so the CPU stages spread over all 8 (2, 4, 2)
    assert plan.cpus == {
        "read": C("0,4"), "decode": C("1-2,5-6"), "upload": C("0-7"), "download": C("0-7"),
        "save": C("3,7"),
    }
    assert plan.notes == [
        "GPU 0's NUMA node is unknown: stage 'upload' may run on any allowed CPU",
        "GPU 1's NUMA node is unknown: stage 'download' may run on any allowed CPU",
    ]


def test_plan_gappy_cpulists(tmp_path):
    topo = topology(fake_sysfs.gappy(tmp_path))
    stages = [StageSlot("read", 1, None, None), StageSlot("decode", 4, None, None),
              StageSlot("save", 2, None, None)]
    assert plan_pinning(stages, "compact", topo).cpus == {
        "read": C("0"), "decode": C("1-3,8"), "save": C("9-10")}
    # spread order: 0,4,1,5,2,6,3,7,8,12,9,13,...; sizes 3, 8, 5
    assert plan_pinning(stages, "spread", topo).cpus == {
        "read": C("0-1,4"), "decode": C("2-3,5-9,12"), "save": C("10-11,13-15")}
    gpu_local = plan_pinning([StageSlot("up", 1, 1, None), *stages], "gpu-local", topo).cpus
    assert gpu_local["up"] == C("4-7,12-15")  # GPU 1 is the one on node 1
    assert gpu_local["read"] | gpu_local["decode"] | gpu_local["save"] == C("0-3,8-11")


def test_plan_more_stages_than_cpus(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path), allowed_cpus={0, 16})
    stages = [StageSlot(f"s{i}", 2, None, None) for i in range(3)]
    assert plan_pinning(stages, "spread", topo).cpus == {
        "s0": C("0"), "s1": C("16"), "s2": C("0")}
    assert plan_pinning(stages, "compact", topo).cpus == {
        "s0": C("0,16"), "s1": C("0,16"), "s2": C("0,16")}


def test_plan_compact_wraps_round(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path), allowed_cpus={0, 1, 16, 17})
    stages = [StageSlot("a", 3, None, None), StageSlot("b", 3, None, None)]
    assert plan_pinning(stages, "compact", topo).cpus == {"a": C("0-1,16"), "b": C("0-1,17")}


def test_plan_overrides_are_kept_and_left_out(server):
    plan = plan_pinning(pipeline(0, 5, save=C("30-31")), "gpu-local", server)
    assert plan.cpus["save"] == C("30-31")
    assert plan.cpus["read"] | plan.cpus["decode"] == C("0-31")
    assert plan_pinning(pipeline(read=C("7")), "none", server).cpus["read"] == C("7")


def test_plan_gpu_local_notes(server):
    plan = plan_pinning(pipeline(None, 12), "gpu-local", server)
    assert plan.notes == [
        "stage 'download' feeds GPU 12, which the topology does not list: "
        "spread with the CPU stages",
        "gpu-local: no stage feeds or drains a GPU; all stages spread",
    ]
    assert plan.cpus == plan_pinning(pipeline(None, None), "spread", server).cpus


@given(
    workers=st.lists(st.integers(0, 40), min_size=1, max_size=40),
    allowed=st.frozensets(st.integers(0, 31), min_size=1),
)
def test_spread_partitions_and_compact_packs(workers, allowed):
    topo = _sysfs._assemble(_SERVER_HW, allowed, None)
    stages = [StageSlot(f"s{i}", w, None, None) for i, w in enumerate(workers)]
    if topo.is_single_node:
        return
    spread = plan_pinning(stages, "spread", topo).cpus
    sets = list(spread.values())
    assert all(s and s <= allowed for s in sets)
    if len(stages) <= len(allowed):
        assert frozenset().union(*sets) == allowed
        assert sum(map(len, sets)) == len(allowed)  # disjoint
    else:
        assert all(len(s) == 1 for s in sets)
    compact = plan_pinning(stages, "compact", topo).cpus
    assert [len(compact[s.name]) for s in stages] == [
        min(max(1, w), len(allowed)) for w in workers]


_SERVER_HW = _sysfs._Hardware(
    nodes=(NumaNode(0, C("0-15"), 0, (10, 21)),
           NumaNode(1, C("16-31"), 0, (21, 10))),
    has_node_dir=True, gpus=(), notes=(),
)


# -- bad input -----------------------------------------------------------------


def test_bad_policy(server):
    with pytest.raises(GraphError, match="pin='local' is not a pinning policy"):
        plan_pinning(pipeline(), "local", server)


def test_cpus_that_do_not_exist(server):
    with pytest.raises(GraphError, match="'decode'.*40-41.*does not have") as info:
        plan_pinning(pipeline(decode=C("3,40-41")), "none", server)
    assert info.value.stages == ("decode",)


def test_cpus_not_allowed(tmp_path):
    topo = topology(fake_sysfs.two_socket_server(tmp_path), allowed_cpus=C("0-15"))
    with pytest.raises(GraphError, match="16-17 that this process may not use") as info:
        plan_pinning(pipeline(read=C("15-17"), save=C("99")), "gpu-local", topo)
    assert info.value.stages == ("read", "save")


@pytest.mark.parametrize("bad", [frozenset(), frozenset({"1"}), frozenset({True})])
def test_cpus_malformed(server, bad):
    with pytest.raises(GraphError, match="non-empty set of CPU numbers"):
        plan_pinning(pipeline(upload=bad), "spread", server)


def test_duplicate_stage_names(server):
    with pytest.raises(GraphError, match="two stages are named 'a'"):
        plan_pinning([StageSlot("a", 1), StageSlot("a", 1)], "spread", server)


# -- this machine ----------------------------------------------------------------


def test_real_topology_respects_affinity():
    topo = topology()
    if HAS_AFFINITY:
        assert topo.allowed_cpus <= frozenset(os.sched_getaffinity(0))
    assert topo.allowed_cpus and topo.allowed_cpus <= topo.cpus
    assert all(g.cpus <= topo.allowed_cpus for g in topo.gpus)
    assert _sysfs._real_hardware() is _sysfs._real_hardware()  # read once
    assert topo.table().startswith("NUMA nodes: ")


def test_real_one_node_gpu_local_is_noop_with_note():
    topo = topology()
    node0 = next(n for n in topo.nodes if n.cpus & topo.allowed_cpus)
    one_node = topology(allowed_cpus=node0.cpus & topo.allowed_cpus)
    assert one_node.is_single_node
    plan = plan_pinning(pipeline(0, 0), "gpu-local", one_node)
    assert plan.is_noop
    assert plan.notes == ["gpu-local on a single-node machine: no-op"]


@pytest.mark.skipif(not HAS_AFFINITY, reason="no os.sched_setaffinity here")
def test_pin_current_thread_pins_only_that_thread():
    before = frozenset(os.sched_getaffinity(0))
    cpu = min(before)
    pinned = threading.Event()
    release = threading.Event()
    seen: list[frozenset[int]] = []

    def worker():
        pin_current_thread(frozenset({cpu}))
        seen.append(frozenset(os.sched_getaffinity(0)))
        pinned.set()
        release.wait()  # stay pinned while the caller looks at its own affinity

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert pinned.wait(10)
        assert seen == [frozenset({cpu})]
        assert frozenset(os.sched_getaffinity(0)) == before
    finally:
        release.set()
        t.join()
    assert frozenset(os.sched_getaffinity(0)) == before


def test_pin_current_thread_none_is_noop():
    before = os.sched_getaffinity(0) if HAS_AFFINITY else None
    pin_current_thread(None)
    assert (os.sched_getaffinity(0) if HAS_AFFINITY else None) == before


@pytest.mark.skipif(not HAS_AFFINITY, reason="no os.sched_setaffinity here")
def test_call_on_cpus():
    before = frozenset(os.sched_getaffinity(0))
    cpu = max(before)
    assert call_on_cpus(frozenset({cpu}), lambda: frozenset(os.sched_getaffinity(0))) == {cpu}
    assert frozenset(os.sched_getaffinity(0)) == before
    assert call_on_cpus(None, threading.current_thread) is threading.current_thread()

    def boom(x):
        raise KeyError(x)

    with pytest.raises(KeyError, match="7"):
        call_on_cpus(frozenset({cpu}), boom, 7)


def test_numba_threads_for():
    import numba

    cap = numba.config.NUMBA_NUM_THREADS
    assert numba_threads_for(None) == cap
    assert numba_threads_for(frozenset({0})) == 1
    assert numba_threads_for(frozenset(range(cap + 8))) == cap
    assert numba_threads_for(frozenset(range(2))) == min(2, cap)
