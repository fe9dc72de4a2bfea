"""gc.distributed: all_reduce as a graph primitive (one process here; jobs of 2 and 4 under
the mpirun these tests start), bucketing, the agreement check and the deadline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.ops import make
from graphc.schedule import schedule_graph
from graphc.schedule.buckets import bucket_all_reduce, plan_buckets
from graphc.schedule.policy import SchedulePolicy

HERE = Path(__file__).parent
WORKER = HERE / "distributed_worker.py"


def reduced(t, ranks: int = 2, reduction: str = "mean"):
    """An all_reduce node for a job of `ranks` (built, scheduled and rendered here, never
    run: running needs the job)."""
    return gc.Tensor(make("all_reduce", t.node, reduction=reduction, ranks=ranks))


# -- one process ---------------------------------------------------------------------------

def test_one_process_rank_and_size():
    assert "OMPI_COMM_WORLD_SIZE" not in os.environ
    assert (gc.distributed.rank(), gc.distributed.size()) == (0, 1)


@pytest.mark.parametrize("backend,options", [("numpy", None), ("numpy", {"mode": "kernels"}),
                                             ("llvm", None)])
def test_one_process_all_reduce_is_folded_away(backend, options):
    x = gc.placeholder((None, 3), "float64", name="x")
    y = gc.distributed.all_reduce(x * 2.0)
    s = gc.distributed.all_reduce(gc.sum(x), op="sum")
    assert "all_reduce" in gc.show(y) and "reduction=mean" in gc.show(y)
    f = gc.function([x], [y, s], backend=backend, backend_options=options)
    a = np.arange(6.0).reshape(2, 3)
    out = f(a)
    np.testing.assert_array_equal(out[0], a * 2)
    assert out[1] == a.sum()
    assert all(n.op != "all_reduce" for n in f.graph.nodes())
    assert all(k.kind != "all_reduce" for k in f.schedule((2, 3)).kernels)
    if backend == "numpy" and options is None:  # not optimized: the node runs (identity)
        g = gc.function([x], y, backend="numpy", optimize=False)
        assert any(n.op == "all_reduce" for n in g.graph.nodes())
        np.testing.assert_array_equal(g(a), a * 2)


def test_bad_arguments_name_the_argument():
    x = gc.placeholder((3,), "float64", name="x")
    with pytest.raises(ValueError, match="op must be one of"):
        gc.distributed.all_reduce(x, op="max")
    with pytest.raises(gc.DTypeError, match="all_reduce.*bool"):
        gc.distributed.all_reduce(x > 0, op="sum")
    with pytest.raises(gc.DTypeError, match="op='mean' needs a float"):
        gc.distributed.all_reduce(gc.placeholder((3,), "int64"), op="mean")
    with pytest.raises(ValueError, match="seconds must be a number > 0"):
        gc.distributed.set_timeout(0)
    with pytest.raises(TypeError, match="not a gc.parameter"):
        gc.distributed.broadcast_parameters([np.zeros(3)])


def test_gradient_is_the_all_reduce_of_the_cotangent():
    """JAX's psum rule: reverse mode reduces the cotangent, forward mode the tangent."""
    x = gc.placeholder((3,), "float64", name="x")
    for reduction in ("sum", "mean"):
        y = reduced(x * 3.0, reduction=reduction)
        (g,) = gc.vjp(y, [x], [gc.placeholder((3,), "float64", name="ct")])
        found = [n for n in gc.Graph((), (g.node,)).nodes() if n.op == "all_reduce"]
        assert [n.attrs for n in found] == [{"reduction": reduction, "ranks": 2}]
        assert found[0].inputs[0].op == "placeholder"  # the cotangent itself
        t = gc.jvp(y, [x], [gc.placeholder((3,), "float64", name="tan")])
        assert any(n.op == "all_reduce" for n in gc.Graph((), (t.node,)).nodes())


def test_one_process_gradient_agrees_with_finite_differences():
    result = gc.check_grad(lambda w: gc.sum(gc.distributed.all_reduce(gc.tanh(w) * w)),
                           np.array([0.3, -1.2, 2.0]), raise_on_failure=True)
    assert result.ok and max(result.max_rel_error) < 1e-6


def _mlp_step(ranks: int):
    x = gc.placeholder((5, 4), "float64", name="x")
    W1 = gc.parameter(np.ones((4, 8)), name="W1")
    b1 = gc.parameter(np.zeros(8), name="b1")
    W2 = gc.parameter(np.ones((8, 2)), name="W2")
    local = gc.sum(gc.tanh(x @ W1 + b1) @ W2)
    params = [W1, b1, W2]
    grads = [reduced(g, ranks) for g in gc.grad(local, params)]
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    return gc.function([x], reduced(local, ranks), updates=updates, backend="numpy",
                       optimize=True)


def test_bucketing_packs_small_reductions_into_one():
    f = _mlp_step(2)
    graph = f.graph
    assert [len(b) for b in plan_buckets(graph, 1 << 20)] == [4]  # the loss and 3 gradients
    s = schedule_graph(graph)
    kinds = [k for k in s.kernels if k.kind == "all_reduce"]
    assert len(kinds) == 1 and kinds[0].size == 1 + 4 * 8 + 8 + 8 * 2
    assert "all_reduce/sum [57] f64 over 2 processes" in s.listing()
    # buckets fill in the order the operands are ready (the loss, then the last layer's W2,
    # then b1, then W1), and a tensor of bucket_bytes or more is reduced alone, where it
    # lies: the loss (8 bytes), W2 (128) and b1 (64) share a bucket of 200; W1 (256) is alone
    (three,) = plan_buckets(graph, 200)
    assert [n.shape for n in three] == [(), (8, 2), (8,)]
    # with 100, W2 is alone, and closes the open bucket: the loss does not wait for b1
    assert plan_buckets(graph, 100) == []
    # DDP's small first bucket: the first group closes at first_bucket_bytes (W2 alone
    # there), the next fills up to bucket_bytes
    assert [[n.shape for n in b] for b in plan_buckets(graph, 1000, 100)] == [[(8,), (4, 8)]]
    assert [[n.shape for n in b] for b in plan_buckets(graph, 1000, 200)] == [
        [(), (8, 2), (8,)]]
    small = schedule_graph(graph, policy=SchedulePolicy(bucket_bytes=8))
    assert sum(k.kind == "all_reduce" and k.phase in ("", "start") for k in small.kernels) == 4


def test_dependent_reductions_are_not_bucketed_together():
    x = gc.placeholder((3,), "float64", name="x")
    a = reduced(x)
    b = reduced(a * 2.0)
    c = reduced(x + 1.0)
    g = gc.Graph((x.node,), (b.node, c.node), ())
    # b reads a: they cannot share a call; a and c can
    (bucket,) = plan_buckets(g, 1 << 20)
    assert set(bucket) == {a.node, c.node}
    fused = bucket_all_reduce(g, 1 << 20)
    ops = [n.op for n in fused.nodes()]
    assert ops.count("all_reduce") == 2 and ops.count("concatenate") == 1


def test_reductions_start_before_the_backward_pass_and_wait_before_their_readers():
    from graphc.schedule import ir
    f = _mlp_step(2)
    s = schedule_graph(f.graph, policy=SchedulePolicy(bucket_bytes=8))  # each reduced alone
    ks = s.kernels
    starts = [i for i, k in enumerate(ks) if k.kind == "all_reduce" and k.phase == "start"]
    waits = {k.request: i for i, k in enumerate(ks) if k.kind == "all_reduce"
             and k.phase == "wait"}
    assert len(starts) == 4 and sorted(ks[i].request for i in starts) == sorted(waits)
    gemms = [i for i, k in enumerate(ks) if isinstance(k, ir.Gemm)]
    # the first gradient's reduction is in flight while the other gradients' GEMMs run
    first_grad = next(i for i in starts if ks[i].size > 1)
    assert any(first_grad < g < waits[ks[first_grad].request] for g in gemms)
    for i in starts:
        k = ks[i]
        w = waits[k.request]
        between = ks[i + 1:w]
        assert i < w and between  # something overlaps
        assert not any(k.buffer in b.reads() | b.writes() for b in between)
        first_reader = next(j for j in range(w + 1, len(ks)) if k.buffer in ks[j].reads())
        assert not any(k.buffer in b.reads() for b in ks[w + 1:first_reader])
        assert k.request in s.plan.offsets  # the request lives in the arena
    # the last layer's gradients are ready first, and their reductions start first (DDP's
    # order): W2 before b1 before W1
    sizes = [ks[i].size for i in starts]
    assert sizes.index(8 * 2) < sizes.index(8) < sizes.index(4 * 8)
    # after each kernel while reductions are in flight, a test of the newest (MPI_Test: MPI
    # progresses them only inside its calls); a test touches only the request
    flying: list = []
    for j, k in enumerate(ks):
        if k.kind == "all_reduce" and k.phase == "start":
            flying.append(k.request)
        elif k.kind == "all_reduce" and k.phase == "wait":
            flying.remove(k.request)
        elif k.kind == "all_reduce" and k.phase == "test":
            assert k.request == flying[-1] and k.reads() == k.writes() == {k.request}
        elif flying:
            assert ks[j + 1].phase == "test", (j, s.listing())
    assert not flying
    quiet = schedule_graph(f.graph, policy=SchedulePolicy(bucket_bytes=8,
                                                          progress_reductions=False))
    phases = [k.phase for k in quiet.kernels if k.kind == "all_reduce"]
    assert "test" not in phases and phases.count("start") == phases.count("wait") == 4
    # the blocking call where nothing is left to overlap with, and when switched off
    one = schedule_graph(f.graph)
    assert [k.phase for k in one.kernels if k.kind == "all_reduce"] == [""]
    off = schedule_graph(f.graph, policy=SchedulePolicy(bucket_bytes=8,
                                                        overlap_reductions=False))
    assert [k.phase for k in off.kernels if k.kind == "all_reduce"] == [""] * 4


def test_a_check_that_can_fail_is_not_passed_by_a_reduction_in_flight():
    # an error in one process must not leave its reduction in flight (the others would
    # hang in a later one): the wait comes before the gather that checks its indices
    x = gc.placeholder((4,), "float64", name="x")
    i = gc.placeholder((2,), "int64", name="i")
    g = gc.Graph((x.node, i.node), (reduced(x * 2.0).node, (gc.take(x * 3.0, i) + 1.0).node),
                 ())
    ks = schedule_graph(g, optimize=False).kernels
    phases = [(k.phase, n) for n, k in enumerate(ks) if k.kind == "all_reduce"]
    (fail,) = [n for n, k in enumerate(ks) if k.can_fail]
    assert [p for p, _ in phases] == ["start", "test", "wait"]
    start, wait = phases[0][1], phases[2][1]
    assert start + 1 < wait < fail  # the multiplication before the gather overlaps


def test_all_reduce_phase_is_checked():
    from graphc.schedule import ir
    with pytest.raises(ValueError, match="phase"):
        ir.AllReduce(0, 4, np.dtype("float64"), 2, phase="begin")
    with pytest.raises(ValueError, match="request"):
        ir.AllReduce(0, 4, np.dtype("float64"), 2, phase="wait")


def test_llvm_renders_a_call_of_mpi_allreduce():
    from graphc.backends.llvm import codegen
    f = _mlp_step(2)
    texts, _, _ = codegen.render(schedule_graph(f.graph))
    text = "\n".join(texts)
    assert text.count('call i32 @"MPI_Allreduce"') == 1
    assert '@"graphc_mpi_handles" = external global [8 x i64]' in text


def test_cuda_reduces_on_the_host_between_the_launches():
    """On the cuda backend an all_reduce is no CUDA C but a host step in the launch list, at
    its buffer's place in the call layout; it survives the disk cache's metadata."""
    from graphc.backends.cuda.collective import Collective
    from graphc.backends.cuda.render import render
    from graphc.backends.cuda.runtime import _launch_meta, _launches_from
    s = schedule_graph(_mlp_step(2).graph, policy=SchedulePolicy(bucket_bytes=8))
    rendered = render(s)
    steps = [L for L in rendered.launches if isinstance(L, Collective)]
    kernels = [(i, k) for i, k in enumerate(s.kernels) if k.kind == "all_reduce"]
    assert [(c.kernel, c.phase, c.request, c.size) for c in steps] == [
        (i, k.phase, k.request, k.size) for i, k in kernels]
    assert all(f"// kernel {i}: " not in rendered.source for i, _ in kernels)  # no CUDA C
    for c in steps:
        assert (c.slot, c.offset) == (rendered.slots.arena_slot, s.plan.offsets[
            s.kernels[c.kernel].buffer])  # (gradients: temporaries in the arena)
        assert c.dtype == "float64" and c.ranks == 2
    assert _launches_from(json.loads(json.dumps(_launch_meta(rendered.launches)))) == \
        rendered.launches


# -- jobs under mpirun ---------------------------------------------------------------------

def _mpirun() -> str:
    pytest.importorskip("mpi4py")
    local = Path(sys.executable).parent / "mpirun"
    found = str(local) if local.exists() else shutil.which("mpirun")
    if not found:
        pytest.skip("mpirun is not installed (pip install 'graphc[distributed]')")
    return found


def _job(n: int, *args: str, timeout: float = 300, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), *args]
    if n:
        cmd = [_mpirun(), "-n", str(n), "--oversubscribe", *cmd]
    full = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "one.json"
    _mpirun()
    done = _job(0, "train", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 4])
def test_job_matches_one_process_with_the_combined_batch(ranks, one_process, tmp_path):
    out = tmp_path / f"{ranks}.json"
    done = _job(ranks, "train", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(out.read_text())
    for backend in ("numpy", "kernels", "llvm"):
        np.testing.assert_allclose(job[backend]["losses"], one_process[backend]["losses"],
                                   rtol=1e-12, err_msg=backend)
        for got, want in zip(job[backend]["params"], one_process[backend]["params"]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=backend)
    # the gradients and the loss: one bucket, one reduction per step (started early where
    # a kernel that does not read it is left to overlap with)
    source = job["llvm"]["source"]
    assert (source.count('call i32 @"MPI_Allreduce"')
            + source.count('call i32 @"MPI_Iallreduce"')) == 1


@pytest.mark.slow
def test_overlapped_reductions_give_the_same_losses_and_parameters(one_process, tmp_path):
    out = tmp_path / "overlap.json"
    done = _job(2, "train", str(out), "1")  # buckets of 1 byte: every tensor reduced alone
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(out.read_text())
    for backend in ("numpy", "kernels", "llvm"):
        np.testing.assert_allclose(job[backend]["losses"], one_process[backend]["losses"],
                                   rtol=1e-12, err_msg=backend)
        for got, want in zip(job[backend]["params"], one_process[backend]["params"]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=backend)
    source = job["llvm"]["source"]
    # the loss and 4 gradients: each started, then waited for
    assert source.count('call i32 @"MPI_Iallreduce"') == 5
    assert source.count('call i32 @"MPI_Wait"') == 5
    assert 'call i32 @"MPI_Test"' in source  # progress between the kernels in flight


@pytest.fixture(scope="module")
def one_process_cuda(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "one-cuda.json"
    _mpirun()
    done = _job(0, "train-cuda", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())["cuda"]


@pytest.mark.slow
@pytest.mark.parametrize("ranks,bucket_bytes,phases", [
    (2, "1", {"start", "test", "wait"}),  # a reduction per tensor: overlapped
    (4, "", {"start", "test", "wait"})])  # one bucket (a kernel left to overlap with)
def test_emulated_cuda_job_matches_one_process(ranks, bucket_bytes, phases, one_process_cuda,
                                               tmp_path):
    """The cuda backend's all_reduce (a host step between the launches: MPI on the
    emulator's host buffers) gives one process's losses and parameters."""
    out = tmp_path / f"{ranks}.json"
    done = _job(ranks, "train-cuda", str(out), *([bucket_bytes] if bucket_bytes else []))
    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(out.read_text())["cuda"]
    np.testing.assert_allclose(job["losses"], one_process_cuda["losses"], rtol=1e-12)
    for got, want in zip(job["params"], one_process_cuda["params"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert one_process_cuda["collectives"] == []  # alone: removed by the optimizer
    assert set(job["collectives"]) == phases
    starts = job["collectives"].count("start")
    assert starts == job["collectives"].count("wait") == (5 if bucket_bytes else 1)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_job_reduces_through_nccl(tmp_path):
    """On GPUs (one per process: NCCL refuses two ranks on one device) the reduction is
    NCCL's, in place on the device buffers: the losses and parameters of one process."""
    from graphc.backends.cuda.backend import gpu_problem
    why = gpu_problem()
    if why is not None:
        pytest.skip(f"no GPU: {why}")
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL needs a GPU per process: this machine has one")
    pytest.importorskip("cupy.cuda.nccl")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    for n, out in ((0, one), (2, two)):
        done = _job(n, "train-gpu", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
    want, got = (json.loads(p.read_text())["cuda"] for p in (one, two))
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-12)
    for g, w in zip(got["params"], want["params"]):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)
    assert got["collectives"] and not want["collectives"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["killed", "stuck"])
def test_a_lost_rank_ends_the_job_within_the_timeout(scenario, tmp_path):
    start = time.perf_counter()
    done = _job(2, scenario, str(tmp_path / "x"), timeout=120, env={"WORKER_TIMEOUT": "4"})
    assert done.returncode != 0
    assert time.perf_counter() - start < 60
    text = done.stdout + done.stderr
    if scenario == "stuck":  # alive but silent: only the deadline can tell
        assert "rank 0 waited more than 4 s in a step with all_reduce" in text, text
    else:
        assert "Killed" in text or "signal 9" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("scenario,words", [
    ("shapes", ["disagree about the step's reductions", "all_reduce/mean f64[3]",
                "all_reduce/mean f64[4]"]),
    ("program", ["disagree about the step's programs"])])
def test_ranks_that_disagree_fail_on_every_rank(scenario, words, tmp_path):
    done = _job(2, scenario, str(tmp_path / "x"), timeout=120)
    assert done.returncode != 0
    for r in (0, 1):
        line = f"rank {r} caught: gc.distributed: the processes disagree"
        assert line in done.stdout, done.stdout + done.stderr
    for w in words:
        assert w in done.stdout


@pytest.mark.slow
def test_example_gives_one_process_accuracy_on_two():
    example = HERE.parent / "examples" / "data_parallel.py"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    runs = []
    for prefix in ([], [_mpirun(), "-n", "2", "--oversubscribe"]):
        done = subprocess.run(prefix + [sys.executable, str(example), "--quick"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        final = [ln for ln in done.stdout.splitlines() if ln.startswith("final test")]
        assert len(final) == 1, done.stdout  # printed by rank 0 only
        runs.append(final[0])
    assert runs[0] == runs[1]


def test_processes_of_a_job_share_the_cores(monkeypatch):
    from graphc.backends.llvm.threads import num_threads
    monkeypatch.delenv("GRAPHC_NUM_THREADS", raising=False)
    alone = num_threads()
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    bound = len(os.sched_getaffinity(0)) < (os.cpu_count() or 1)
    assert num_threads() == (alone if bound else max(1, alone // 2))
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "3")
    assert num_threads() == 3


@pytest.mark.slow
def test_fit_shards_by_rank_and_rank_0_alone_prints_and_checkpoints(tmp_path):
    # batch_size 4 per process: two processes draw the batches of 8 that one process draws
    two = _job(2, "fit", str(tmp_path / "ckpt-{epoch}.npz"), "4", timeout=120)
    one = _job(0, "fit", str(tmp_path / "alone-{epoch}.npz"), "8", timeout=120)
    for run in (one, two):
        assert run.returncode == 0, run.stdout + run.stderr
    out = two.stdout
    assert out.count("epoch 1/2") == 1 and out.count("epoch 2/2") == 1
    assert out.count("rank 0 saves a checkpoint") == 2 and "rank 1 saves" not in out
    assert (tmp_path / "ckpt-2.npz").exists()
    losses = dict(line.split(" losses ") for line in out.splitlines() if " losses " in line)
    assert losses["rank 0"] == losses["rank 1"]
    alone = one.stdout.split("rank 0 losses ")[1].strip()
    np.testing.assert_allclose(json.loads(losses["rank 0"]), json.loads(alone), rtol=1e-12)
