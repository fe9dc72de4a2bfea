"""What the per-kernel disk cache saves when a program follows another in the same cache
folder, each in a fresh process: W5 then W6 (a CNN then a ResNet: different GEMMs, one
dtype), an 8-layer MLP step then a 9-layer one (benchmarks/bench_resnet.py), or any
sequence of models (W5, W6, W6@B: W6 specialized to batch B, mlpN or mlpN:W: N layers of
width W). For each program: wall seconds and CPU seconds (this process and its
compile processes) from building the graph to the end of its first call, and what was
compiled ("kernels compiled", "library compiled": shared GEMM functions).
Run: python benchmarks/bench_kernel_cache.py [--sequence W5,W6] [--rounds 3]
     (each round in a new, empty cache folder; the folder is removed after)"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
import numpy as np
import bench_training as bt
bt.import_llvm_backend()
import bench_resnet as br
model = sys.argv[1]
t0, c0 = time.perf_counter(), os.times()
if model == "W5":
    params, x, y = bt.cnn_data()
    f = bt.graphc_cnn_step(params)
elif model.startswith("W6"):  # W6 (symbolic batch), W6@B: specialized to batch B
    batch = int(model[3:]) if "@" in model else None
    f = br.graphc_resnet_step(br.resnet_params(), batch=batch)
    x, y = br.resnet_data(batch or 64)
else:  # mlpN, mlpN:W: depth N, width W (256)
    depth, _, width = model[3:].partition(":")
    rng = np.random.default_rng(2)
    w = int(width or 256)
    x, y = rng.normal(size=(64, w)).astype(np.float32), rng.integers(0, 10, 64)
    f = br.graphc_mlp_step(br.mlp_params(int(depth), w))
f(x, y)
t1, c1 = time.perf_counter(), os.times()
cpu = sum(c1[i] - c0[i] for i in range(4))  # user, system; of children: user, system
t = f.compile_times
print(json.dumps({"wall": t1 - t0, "cpu": cpu, **{k: t.get(k) for k in (
    "kernels distinct", "kernels compiled", "library compiled", "library loaded",
    "modules")}}))
"""


def run(model: str, cache: str) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=cache)
    done = subprocess.run([sys.executable, "-c", CHILD, model, HERE], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default="W5,W6")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    models = args.sequence.split(",")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            for model in models:
                out = run(model, cache)
                print(f"round {r} {model:6s} wall {out.pop('wall'):.2f} s  "
                      f"cpu {out.pop('cpu'):.2f} s  {out}", flush=True)


if __name__ == "__main__":
    main()
