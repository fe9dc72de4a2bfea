"""Run by tests/test_distributed.py, alone or under mpirun: a data-parallel training run whose
losses and parameters the test compares across job sizes, and ways for a job to go wrong."""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import graphc as gc

GLOBAL_BATCH = 24  # split evenly over 1, 2 or 4 processes
STEPS = 4


def train(backend: str, options: dict | None) -> dict:
    """A tanh MLP trained by SGD with momentum, each process on its share of every batch;
    returns the (job-wide) losses and the final parameters."""
    r, k = gc.distributed.rank(), gc.distributed.size()
    init = np.random.default_rng(100 + r)  # differs by rank: broadcast_parameters fixes it
    W1 = gc.parameter(init.normal(0, 0.5, (8, 16)), name="W1")
    b1 = gc.parameter(np.zeros(16), name="b1")
    W2 = gc.parameter(init.normal(0, 0.5, (16, 3)), name="W2")
    b2 = gc.parameter(np.zeros(3), name="b2")
    params = [W1, b1, W2, b2]
    gc.distributed.broadcast_parameters(params)
    x = gc.placeholder((None, 8), "float64", name="x")
    y = gc.placeholder((None,), "int64", name="y")
    local = gc.nn.cross_entropy(gc.tanh(x @ W1 + b1) @ W2 + b2, y)
    opt = gc.optim.SGD(0.5, momentum=0.9)
    step = gc.function([x, y], gc.distributed.all_reduce(local), backend=backend,
                       updates=opt.updates(local, params), backend_options=options)
    data = np.random.default_rng(7)
    share = GLOBAL_BATCH // k
    losses = []
    for _ in range(STEPS):
        xs = data.normal(size=(GLOBAL_BATCH, 8))
        ys = data.integers(0, 3, GLOBAL_BATCH)
        part = slice(r * share, (r + 1) * share)
        losses.append(float(step(xs[part], ys[part])))
    out = {"losses": losses, "params": [p.value.tolist() for p in params],
           "source": step.source if backend == "llvm" else ""}
    if backend == "cuda":  # the host's reductions between the launches
        from graphc.backends.cuda.collective import Collective
        out["collectives"] = [c.phase or "blocking" for c in step._exe.last.launches
                              if isinstance(c, Collective)]
    return out


def main() -> None:
    scenario, out = sys.argv[1], sys.argv[2]
    r = gc.distributed.rank()
    if scenario in ("train", "train-cuda", "train-gpu"):
        if len(sys.argv) > 3:  # another bucket size: one reduction per gradient, overlapped
            import dataclasses

            from graphc.backend import get_backend
            for name in ("numpy", "llvm", "cuda"):
                backend = get_backend(name)
                backend.policy = dataclasses.replace(backend.policy,
                                                     bucket_bytes=int(sys.argv[3]))
        results = {}
        runs = [("numpy", "numpy", None), ("kernels", "numpy", {"mode": "kernels"}),
                ("llvm", "llvm", None)]
        if scenario == "train-cuda":  # the CUDA C, emulated: host buffers reduced by MPI
            runs = [("cuda", "cuda", {"emulate": True})]
        elif scenario == "train-gpu":  # on GPUs: device buffers reduced by NCCL
            runs = [("cuda", "cuda", {"outputs": "numpy"})]
        for name, backend, options in runs:
            results[name] = train(backend, options)
        if r == 0:
            with open(out, "w") as f:
                json.dump(results, f)
    elif scenario == "fit":  # shards, prints and checkpoints
        import graphc.train.checkpoint as checkpoint
        original = checkpoint.save

        def save(*args, **kwargs):
            print(f"rank {r} saves a checkpoint", flush=True)
            return original(*args, **kwargs)
        checkpoint.save = save
        W = gc.parameter(np.zeros((4, 1)), name="W")
        x = gc.placeholder((None, 4), "float64", name="x")
        t = gc.placeholder((None, 1), "float64", name="t")
        local = gc.nn.mse(x @ W, t)
        step = gc.function([x, t], gc.distributed.all_reduce(local), backend="numpy",
                           updates=gc.optim.SGD(0.1).updates(local, [W]))
        data = np.random.default_rng(3)
        xs = data.normal(size=(32, 4))
        batch = int(sys.argv[3])
        history = gc.train.fit(step, (xs, xs @ np.arange(4.0)[:, None]), 2, batch,
                               progress=False,
                               callbacks=[gc.train.checkpoint_every(out, [W])])
        print(f"rank {r} losses {history.loss}", flush=True)
    elif scenario in ("killed", "stuck"):
        gc.distributed.set_timeout(float(os.environ.get("WORKER_TIMEOUT", "5")))
        x = gc.placeholder((3,), "float64", name="x")
        f = gc.function([x], gc.distributed.all_reduce(x, op="sum"), backend="llvm")
        for i in range(3):
            if i == 2 and r == 1:
                if scenario == "killed":
                    os.kill(os.getpid(), 9)
                time.sleep(600)  # stuck: alive, but no longer stepping
            f(np.ones(3))
    elif scenario in ("shapes", "program"):
        x = gc.placeholder((3 + (r if scenario == "shapes" else 0),), "float64", name="x")
        y = gc.distributed.all_reduce(x if scenario == "shapes" or r == 0 else x * 2)
        f = gc.function([x], y, backend="numpy")
        try:
            f(np.ones(x.shape))
        except gc.distributed.DistributedError as exc:
            print(f"rank {r} caught: {exc}", flush=True)
            sys.exit(7)
        print(f"rank {r}: no error", flush=True)


if __name__ == "__main__":
    main()
