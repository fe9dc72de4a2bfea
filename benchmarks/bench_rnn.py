"""W7, a character-level LSTM training step, against PyTorch and JAX measured in the same run.
  W7      vocabulary 64, embedding 64, LSTM hidden 256, T=64 steps, batch 32, cross-entropy
          over every step, SGD: graphc (gc.nn.LSTM, llvm) against PyTorch eager (nn.LSTM, its
          fused kernels), torch.compile of the same step and JAX (lax.scan, jit). Step time
          (median) and cold start (graph, gradient, compile and the first step, in a fresh
          process each, with an empty graphc cache folder; the median of --cold-rounds
          rounds, the frameworks taking turns).
  length  the W7 step at T=16 and T=4096: graphc's graph size (nodes, bodies included), lines
          of LLVM IR, and the time to build the graph and gradient and compile them (no step
          runs: gc.function compiles when the inputs' sizes are known); best and median of rounds.
  memory  the W7 step at T=4096 with and without scan checkpointing (gc.nn.LSTM(...,
          checkpoint=True)): the planned arena of temporaries and the peak resident memory of
          a fresh process that runs one step.
  batch   the W7 step with a None batch (graphc, sizes="auto": one symbolic program) against
          the step with batch 32 fixed, in one process: the first call (compile), steps at
          32 (interleaved), then a first call at each new batch size against warm steps
          there, and how many modules were compiled for new sizes.
`--threads 1` runs every framework on one thread (on a machine other processes keep busy,
PyTorch's and XLA's thread teams stall, and the ratios swing with the load).
Run: python benchmarks/bench_rnn.py [--only W7,length,memory,batch] [--repeat 20] [--rounds 5]
     [--cold-rounds 3] [--threads N] [--no-torch-compile]"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import cold_env, import_llvm_backend, median_ms  # noqa: E402 (as W1-W6)

VOCAB, EMBED, HIDDEN, SEQ, BATCH, LR = 64, 64, 256, 64, 32, 0.1


# ---- the model's parameters and data, the same numbers for every framework ---------------

def w7_params(seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's layouts and initialisation: the embedding table, the LSTM's weight_ih
    (4H, E), weight_hh (4H, H), bias_ih, bias_hh (4H,), the output layer (H, V) and (V,)."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(HIDDEN)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    return {"embed": rng.normal(size=(VOCAB, EMBED)).astype(np.float32),
            "weight_ih": u(4 * HIDDEN, EMBED), "weight_hh": u(4 * HIDDEN, HIDDEN),
            "bias_ih": u(4 * HIDDEN), "bias_hh": u(4 * HIDDEN),
            "w_out": u(HIDDEN, VOCAB), "b_out": np.zeros(VOCAB, np.float32)}


def w7_data(seq: int = SEQ, seed: int = 1, batch: int = BATCH
            ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, targets), each (T, N) (time first): a random text and itself shifted by one."""
    text = np.random.default_rng(seed).integers(0, VOCAB, (seq + 1, batch))
    return text[:-1], text[1:]


# ---- graphc ------------------------------------------------------------------------------

def graphc_w7_step(params: dict[str, np.ndarray], seq: int = SEQ, checkpoint: bool = False,
                   backend: str = "llvm", batch: int | None = BATCH,
                   options: dict | None = None):
    """(the compiled step, its loss tensor): gc.nn.LSTM with the given weights, SGD;
    `batch` None: a call-time batch size."""
    import graphc as gc
    lstm = gc.nn.LSTM(EMBED, HIDDEN, checkpoint=checkpoint, name="lstm")
    lstm.load_state_dict({f"{k}_l0": params[k]
                          for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    embed = gc.parameter(params["embed"].copy(), name="embed")
    w_out = gc.parameter(params["w_out"].copy(), name="w_out")
    b_out = gc.parameter(params["b_out"].copy(), name="b_out")
    ids = gc.placeholder((seq, batch), "int64", name="ids")
    targets = gc.placeholder((seq, batch), "int64", name="targets")
    out, _ = lstm(gc.take(embed, ids, axis=0))
    logits = gc.reshape(out, (-1, HIDDEN)) @ w_out + b_out  # (T*N, V): one GEMM
    loss = gc.nn.cross_entropy(logits, gc.reshape(targets, (-1,)))
    p = [embed] + lstm.parameters() + [w_out, b_out]
    grads = gc.grad(loss, p)
    return gc.function([ids, targets], loss, updates={v: v - LR * g for v, g in zip(p, grads)},
                       backend=backend, backend_options=options)


def graph_size(f) -> int:
    """Nodes of the optimized graph, loop bodies included."""
    from graphc.node import toposort
    return len(toposort(f.graph.roots, into_regions=True))


# ---- PyTorch -----------------------------------------------------------------------------

def torch_w7_step(params: dict[str, np.ndarray], compiled: bool = False):
    import torch
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    lstm = torch.nn.LSTM(EMBED, HIDDEN)
    lstm.load_state_dict({f"{k}_l0": torch.tensor(params[k])
                          for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    embed = torch.tensor(params["embed"], requires_grad=True)
    w_out = torch.tensor(params["w_out"], requires_grad=True)
    b_out = torch.tensor(params["b_out"], requires_grad=True)
    p = [embed, *lstm.parameters(), w_out, b_out]

    def step(ids, targets):
        out, _ = lstm(embed[ids])
        logits = out.reshape(-1, HIDDEN) @ w_out + b_out
        loss = torch.nn.functional.cross_entropy(logits, targets.reshape(-1))
        grads = torch.autograd.grad(loss, p)
        with torch.no_grad():
            for v, g in zip(p, grads):
                v -= LR * g
        return loss
    return torch.compile(step) if compiled else step


# ---- JAX ---------------------------------------------------------------------------------

def jax_w7_step(params: dict[str, np.ndarray]):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, ids, targets):
        xw = p["embed"][ids] @ p["weight_ih"].T + p["bias_ih"] + p["bias_hh"]
        w_hh_t = p["weight_hh"].T

        def cell(carry, xw_t):
            h, c = carry
            z = xw_t + h @ w_hh_t
            i, f, g, o = jnp.split(z, 4, axis=1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((ids.shape[1], HIDDEN), jnp.float32)
        _, out = jax.lax.scan(cell, (zeros, zeros), xw)
        logp = jax.nn.log_softmax(out.reshape(-1, HIDDEN) @ p["w_out"] + p["b_out"])
        return -jnp.take_along_axis(logp, targets.reshape(-1, 1), axis=1).mean()

    @jax.jit
    def step(p, ids, targets):
        loss, grads = jax.value_and_grad(loss_fn)(p, ids, targets)
        return loss, jax.tree_util.tree_map(lambda v, g: v - LR * g, p, grads)

    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}

    def run(ids, targets):
        loss, state["p"] = step(state["p"], ids, targets)
        return loss.block_until_ready()
    return run


# ---- cold starts and memory, each in a process of its own --------------------------------

def _peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux: VmHWM, which starts afresh at exec, unlike
    ru_maxrss, which keeps the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (the compile deals
    LLVM units out to processes): unlike wall time, hardly changed by other processes."""
    import resource
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _child(kind: str, seq: int, checkpoint: bool) -> dict:
    """Seconds from nothing built to the first step's result (libraries already imported);
    for graphc also the parts (graph, gradient and compile; the first step; a second step),
    the graph's size and the memory figures."""
    if kind.startswith("graphc"):
        import_llvm_backend()
    elif kind == "jax":
        import jax  # noqa: F401
    else:
        import torch
    params, (ids, targets) = w7_params(), w7_data(seq)
    rss0 = _peak_rss_mb()
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    out: dict = {}
    if kind.startswith("graphc"):
        f = graphc_w7_step(params, seq, checkpoint)  # compiles: the inputs' sizes are known
        out["compile"] = time.perf_counter() - t0
        out["compile_cpu"] = _cpu_seconds() - cpu0
        out["nodes"] = graph_size(f)
        out["ir_lines"] = f.source.count("\n")
        if kind == "graphc-compile":
            return out
        f(ids, targets)
        out["cold"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        f(ids, targets)
        out["step"] = time.perf_counter() - t1
        out["arena_mb"] = f.schedule().plan.arena_bytes / 2 ** 20
    elif kind == "jax":
        jax_w7_step(params)(ids, targets)
        out["cold"] = time.perf_counter() - t0
    else:
        step = torch_w7_step(params, compiled=kind == "torch.compile")
        step(torch.tensor(ids), torch.tensor(targets)).item()
        out["cold"] = time.perf_counter() - t0
    out["peak_rss_mb"], out["rss_before_mb"] = _peak_rss_mb(), rss0
    return out


def in_child(kind: str, seq: int = SEQ, checkpoint: bool = False,
             timeout: float = 600) -> dict | None:
    try:
        with tempfile.TemporaryDirectory(prefix="graphc-cold-") as cache:
            proc = subprocess.run([sys.executable, __file__, "--child", kind, str(seq),
                                   str(int(checkpoint))], capture_output=True, text=True,
                                  env=cold_env(cache), timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"({kind} at T={seq}: no result within {timeout:.0f} s)")
        return None
    if proc.returncode != 0:
        print(f"({kind} at T={seq} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def bench_w7(repeat: int, torch_compile: bool, cold_rounds: int = 3) -> None:
    params, (ids, targets) = w7_params(), w7_data()
    mine_step = graphc_w7_step(params)
    calls = {"graphc": lambda: mine_step(ids, targets)}
    if _has("torch"):
        import torch
        tids, ttargets = torch.tensor(ids), torch.tensor(targets)
        eager = torch_w7_step(params)
        calls["torch"] = lambda: eager(tids, ttargets)
        if torch_compile:
            compiled = torch_w7_step(params, compiled=True)
            try:
                compiled(tids, ttargets)
                calls["torch.compile"] = lambda: compiled(tids, ttargets)
            except Exception as e:  # report why, and go on with the others
                print(f"(torch.compile failed: {type(e).__name__}: {str(e)[:200]})")
    if _has("jax"):
        jstep = jax_w7_step(params)
        calls["jax"] = lambda: jstep(ids, targets)
    step_ms = {name: median_ms(call, repeat) for name, call in calls.items()}
    # cold starts in rounds, the frameworks taking turns: a slow spell of the machine hits
    # them alike, and the median of each is less at its mercy than one sample
    samples: dict[str, list[float]] = {name: [] for name in step_ms}
    for _ in range(max(1, cold_rounds)):
        for name in step_ms:
            seconds = (in_child(name) or {}).get("cold")
            if seconds is not None:
                samples[name].append(seconds)
    cold = {name: statistics.median(v) if v else None for name, v in samples.items()}
    print(f"W7 char-LSTM step (V={VOCAB}, E={EMBED}, H={HIDDEN}, T={SEQ}, N={BATCH}, SGD): "
          f"median ms per step of {repeat}; cold start s (build, compile, first step; "
          f"median of {max(1, cold_rounds)} rounds)")
    mine, mine_cold = step_ms["graphc"], cold["graphc"]
    for name in step_ms:
        c = cold[name]
        print(f"  {name:<14} step {step_ms[name]:8.2f} ms (graphc/{name} = "
              f"{mine / step_ms[name]:.2f})   cold {c if c is None else round(c, 2)} s"
              + (f" (graphc/{name} = {mine_cold / c:.2f})" if c and mine_cold else ""))


def bench_length(rounds: int) -> None:
    print(f"the W7 step at T=16 and T=4096 (graphc, a fresh process each, empty cache; "
          f"{rounds} rounds, interleaved: the best is the least disturbed by other processes)")
    runs: dict[int, list[dict]] = {16: [], 4096: []}
    for _ in range(rounds):
        for seq in runs:
            r = in_child("graphc-compile", seq)
            if r is not None:
                runs[seq].append(r)
    rows = {}
    for seq, rs in runs.items():
        if not rs:
            continue
        rows[seq] = r = {"nodes": rs[0]["nodes"], "ir_lines": rs[0]["ir_lines"],
                         "compile": min(x["compile"] for x in rs),
                         "median": statistics.median(x["compile"] for x in rs),
                         "cpu": statistics.median(x["compile_cpu"] for x in rs)}
        print(f"  T={seq:<5} graph {r['nodes']} nodes, {r['ir_lines']} lines of LLVM IR; graph, "
              f"gradient and compile: best {r['compile']:.2f} s, median {r['median']:.2f} s, "
              f"CPU (median, with the compile's child processes) {r['cpu']:.2f} s")
    if len(rows) == 2:
        a, b = rows[16], rows[4096]
        print(f"  T=4096 / T=16: nodes {b['nodes'] / a['nodes']:.3f}, IR lines "
              f"{b['ir_lines'] / a['ir_lines']:.3f}, compile {b['compile'] / a['compile']:.3f} "
              f"(best), {b['median'] / a['median']:.3f} (median), {b['cpu'] / a['cpu']:.3f} "
              f"(CPU)")


def bench_memory() -> None:
    print("the W7 step at T=4096: memory with and without scan checkpointing (graphc)")
    for checkpoint in (False, True):
        r = in_child("graphc", 4096, checkpoint)
        if r is None:
            continue
        peak, before = r["peak_rss_mb"], r["rss_before_mb"]
        resident = f"peak resident {peak:.0f} MiB (before building {before:.0f} MiB)" \
            if peak is not None and before is not None else "(no /proc: peak resident unknown)"
        print(f"  checkpoint={checkpoint!s:<5}  planned arena {r['arena_mb']:6.0f} MiB   "
              f"{resident}   step {r['step']:.2f} s")


def bench_batch(repeat: int) -> None:
    """W7 with a None batch against W7 at batch 32, one process (no disk cache)."""
    options = {"cache_dir": None}
    fixed = graphc_w7_step(w7_params(), batch=BATCH, options=options)
    free = graphc_w7_step(w7_params(), batch=None, options=options)
    data = w7_data()
    first = {}
    for name, f in (("batch 32", fixed), ("None batch", free)):
        t0 = time.perf_counter()
        f(*data)
        first[name] = time.perf_counter() - t0
    steps: dict[str, list[float]] = {"batch 32": [], "None batch": []}
    for _ in range(repeat):
        for name, f in (("batch 32", fixed), ("None batch", free)):
            t0 = time.perf_counter()
            f(*data)
            steps[name].append(time.perf_counter() - t0)
    ms = {name: statistics.median(v) * 1e3 for name, v in steps.items()}
    print(f"W7 with a None batch (sizes='auto') against batch 32 fixed, one process: "
          f"first call {first['None batch']:.2f} s against {first['batch 32']:.2f} s; step at "
          f"32 {ms['None batch']:.2f} against {ms['batch 32']:.2f} ms (ratio "
          f"{ms['None batch'] / ms['batch 32']:.3f}, medians of {repeat} interleaved)")
    for n in (1, 5, 33, 17, 64):
        new = w7_data(seed=n, batch=n)
        t0 = time.perf_counter()
        free(*new)
        first_ms = (time.perf_counter() - t0) * 1e3
        warm = median_ms(lambda new=new: free(*new), 5, warmup=0)
        print(f"  batch {n:>3}: first call {first_ms:7.2f} ms, warm step {warm:7.2f} ms "
              f"(first / warm {first_ms / warm:.2f})")
    exe = free._exe
    print(f"  modules compiled for new sizes: {len(exe.compiled)}"
          + (f" (not symbolic: {exe.not_symbolic})" if exe.not_symbolic else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="W7,length,memory")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="cold compiles per length")
    parser.add_argument("--cold-rounds", type=int, default=3,
                        help="W7 cold starts per framework (interleaved; the median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every framework (default: each its own choice)")
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:  # before any framework starts its threads; children inherit it
        n = str(args.threads)
        os.environ.update(GRAPHC_NUM_THREADS=n, OMP_NUM_THREADS=n, XLA_FLAGS=(
            f"--xla_cpu_multi_thread_eigen={'false' if n == '1' else 'true'} "
            f"intra_op_parallelism_threads={n}"))
    if args.child:
        kind, seq, checkpoint = args.child
        print(json.dumps(_child(kind, int(seq), bool(int(checkpoint)))))
        return
    wanted = set(args.only.split(","))
    if "W7" in wanted:
        bench_w7(args.repeat, not args.no_torch_compile, args.cold_rounds)
    if "length" in wanted:
        bench_length(args.rounds)
    if "memory" in wanted:
        bench_memory()
    if "batch" in wanted:
        bench_batch(args.repeat)


if __name__ == "__main__":
    main()
