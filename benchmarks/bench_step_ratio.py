"""A training step of W5 (LeNet) or W6 (the small ResNet): graphc against PyTorch eager,
called alternately, call by call, in one process, so that a slow spell of a busy machine
hits both alike; prints the 10th percentile and the median of each and their ratios.
--clock cpu times by the calling thread's CPU time: run it with --threads 1 (graphc's
GRAPHC_NUM_THREADS and torch.set_num_threads both set to 1), the steadiest same-run ratio
on a machine other processes keep busy; --clock wall --threads 2 is the benchmark's own.
Run: python benchmarks/bench_step_ratio.py [--model W5|W6] [--threads 1] [--clock cpu]
     [--repeat 300]"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def steps(model: str):
    """(graphc step, its arguments, PyTorch step, its arguments)."""
    import torch
    if model == "W6":
        from bench_resnet import (graphc_resnet_step, resnet_data, resnet_params,
                                  torch_resnet_step)
        params, (x, y) = resnet_params(), resnet_data()
        return (graphc_resnet_step(params), (x, y), torch_resnet_step(params),
                (torch.tensor(x), torch.tensor(y)))
    from bench_training import cnn_data, graphc_cnn_step, torch_cnn_step
    params, x, y = cnn_data()
    return (graphc_cnn_step(params), (x, y), torch_cnn_step(params),
            (torch.tensor(x), torch.tensor(y)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("W5", "W6"), default="W5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}")
    os.environ["GRAPHC_NUM_THREADS"] = str(args.threads)  # (read when the step compiles)
    import torch
    torch.set_num_threads(args.threads)
    f, f_args, t, t_args = steps(args.model)
    now = time.thread_time if args.clock == "cpu" else time.perf_counter
    for _ in range(5):
        f(*f_args)
        t(*t_args)
    ours, theirs = [], []
    for _ in range(args.repeat):
        t0 = now()
        f(*f_args)
        ours.append(now() - t0)
        t0 = now()
        t(*t_args)
        theirs.append(now() - t0)
    print(f"{args.model}, {args.threads} thread(s), {args.clock} clock, {args.repeat} calls each")
    for q in (10, 50):
        g, p = np.percentile(ours, q) * 1e3, np.percentile(theirs, q) * 1e3
        print(f"  p{q}: graphc {g:8.3f} ms  torch {p:8.3f} ms  graphc/torch = {g / p:.3f}")


if __name__ == "__main__":
    main()
