"""scan lowered to a loop: a 1-layer LSTM language-model training step (vocabulary 64,
embedding 64, hidden 256, batch 32, cross-entropy over every step, SGD) written with gc.scan
against the same step unrolled in Python, on llvm, at several lengths T: cold start (graph,
gradient, compile and first step in a fresh process with no compile cache), step time
(median), the planned arena of temporaries, the lines of LLVM IR.
Run: python benchmarks/bench_scan.py [--lengths 16,64,4096] [--unrolled 16,64] [--repeat 10]"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

VOCAB, EMBED, HIDDEN, BATCH, LR = 64, 64, 256, 32, 0.1

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import graphc as gc
sys.path.insert(0, {folder!r})
from bench_scan import lstm_step
T, repeat = {length}, {repeat}
f = lstm_step(T, {mode!r})
rng = np.random.default_rng(1)
text = rng.integers(0, {vocab}, (T + 1, {batch}))
ids, targets = text[:-1], text[1:]
f(ids, targets)
cold = time.perf_counter() - t0
times = []
for _ in range(repeat):
    t = time.perf_counter()
    f(ids, targets)
    times.append(time.perf_counter() - t)
compiled = f._exe.last
print(json.dumps(dict(cold_s=cold, step_ms=1e3 * float(np.median(times)),
                      arena_mb=compiled.layout.arena_bytes / 2 ** 20,
                      ir_lines=compiled.ir_text.count("\n"))))
"""


def lstm_step(seq: int, mode: str = "scan"):
    """The compiled training step: embedding, an LSTM cell (PyTorch's gate order i, f, g, o)
    over `seq` steps (gc.scan, or a Python loop when mode is "unrolled"), an output layer,
    the mean cross-entropy over every step, SGD on every parameter."""
    import numpy as np

    import graphc as gc
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(HIDDEN)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    embed = gc.parameter(rng.normal(size=(VOCAB, EMBED)).astype(np.float32), name="embed")
    w_ih = gc.parameter(u(EMBED, 4 * HIDDEN), name="w_ih")
    w_hh = gc.parameter(u(HIDDEN, 4 * HIDDEN), name="w_hh")
    bias = gc.parameter(u(4 * HIDDEN), name="bias")
    w_out = gc.parameter(u(HIDDEN, VOCAB), name="w_out")
    b_out = gc.parameter(np.zeros(VOCAB, np.float32), name="b_out")
    ids = gc.placeholder((seq, BATCH), "int64", name="ids")
    targets = gc.placeholder((seq, BATCH), "int64", name="targets")
    H = HIDDEN

    def cell(carry, x_t):
        h, c = carry
        z = x_t @ w_ih + h @ w_hh + bias
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
        h = gc.sigmoid(o) * gc.tanh(c)
        return (h, c), h

    xs = gc.take(embed, ids, axis=0)
    zeros = gc.constant(np.zeros((BATCH, HIDDEN), np.float32))
    if mode == "scan":
        _, hs = gc.scan(cell, (zeros, zeros), xs)
    else:
        carry, outs = (zeros, zeros), []
        for t in range(seq):
            carry, h = cell(carry, xs[t])
            outs.append(h)
        hs = gc.stack(outs)
    logits = gc.reshape(hs, (-1, HIDDEN)) @ w_out + b_out
    loss = gc.nn.cross_entropy(logits, gc.reshape(targets, (-1,)))
    params = [embed, w_ih, w_hh, bias, w_out, b_out]
    grads = gc.grad(loss, params)
    return gc.function([ids, targets], loss,
                       updates={p: p - LR * g for p, g in zip(params, grads)},
                       backend_options={"cache_dir": None})


def measure(length: int, mode: str, repeat: int) -> dict:
    code = CHILD.format(folder=os.path.dirname(os.path.abspath(__file__)), length=length,
                        repeat=repeat, mode=mode, vocab=VOCAB, batch=BATCH)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="16,64,4096")
    parser.add_argument("--unrolled", default="16,64",
                        help="lengths to run unrolled too (its compile grows with T)")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    lengths = [int(t) for t in args.lengths.split(",") if t]
    unrolled = [int(t) for t in args.unrolled.split(",") if t]
    print(f"{'variant':<22}{'T':>6}{'cold s':>9}{'step ms':>10}{'ms/step t':>11}"
          f"{'arena MB':>10}{'IR lines':>10}")
    runs = [("scan", t) for t in lengths] + [("unrolled", t) for t in unrolled]
    for name, length in runs:
        repeat = max(2, args.repeat // max(1, length // 256))
        r = measure(length, name, repeat)
        print(f"{name:<22}{length:>6}{r['cold_s']:>9.2f}{r['step_ms']:>10.2f}"
              f"{r['step_ms'] / length:>11.3f}{r['arena_mb']:>10.2f}{r['ir_lines']:>10}",
              flush=True)


if __name__ == "__main__":
    main()
