"""One compiled program for every batch size (llvm backend_options={"sizes": "symbolic"})
against a module per input shape ("specialize"), in the same run:
  step    warm step time of W1 (MLP 784-256-256-10, batch 128) and W5 (LeNet-like CNN,
          batch 64), both functions first called at that batch
  small   the symbolic program first called at batch 8 (its choices of threads and
          blocking made there), then timed at the benchmark's batch
  new     first call at a batch never seen before (ms), against a warm step at that batch
          (medians over three batches; first/warm: the median of their ratios), and the
          LLVM compiles and code loads those calls made (0: the symbolic program served)
  cold    the first call of each (compile included; no disk cache)
  arena   the temporaries' arena at the benchmark's batch: the specialised module's plan
          and the symbolic program's plan for that binding (same placement: same bytes)
W6 (the small ResNet step of benchmarks/bench_resnet.py, batch 64) is measured alike.
--against auto compares "auto" (the default: symbolic, except programs listed in
docs/sizes.md, "What falls back to specialising") with "specialize" instead of "symbolic".
Run: python benchmarks/bench_sizes.py [--repeat 50] [--only W1] [--against auto]"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np

from bench_resnet import graphc_resnet_step, resnet_params
from bench_training import cnn_data, graphc_cnn_step, graphc_mlp_step, mlp_data


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def _steps(fns: dict, args: tuple, repeat: int) -> dict:
    """Median ms per function, calls interleaved so that load hits them alike."""
    times: dict = {k: [] for k in fns}
    for _ in range(3):
        for f in fns.values():
            f(*args)
    for _ in range(repeat):
        for k, f in fns.items():
            times[k].append(_timed(f, *args))
    return {k: statistics.median(v) for k, v in times.items()}


def _data(name: str, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    if name == "W1":
        return (rng.normal(size=(batch, 784)).astype(np.float32), rng.integers(0, 10, batch))
    return (rng.normal(size=(batch, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, batch))


def _make(name: str, options: dict):
    options = {"cache_dir": None, **options}
    if name == "W1":
        weights, _, _ = mlp_data([784, 256, 256, 10], 128)
        return graphc_mlp_step(weights, "relu", backend_options=options)
    if name == "W6":
        return graphc_resnet_step(resnet_params(), backend_options=options)
    params, _, _ = cnn_data()
    return graphc_cnn_step(params, backend_options=options)


@contextlib.contextmanager
def _counting_compiles():
    """The LLVM compiles and loads of compiled code made inside, by name."""
    from graphc.backends.llvm import jit, processes
    seen: list[str] = []
    real = {(processes, "compile_schedule"): processes.compile_schedule,
            (jit, "load_objects"): jit.load_objects}

    def counting(module, name):
        def counted(*args, **kwargs):
            seen.append(name)
            return real[module, name](*args, **kwargs)
        return counted
    for module, name in real:
        setattr(module, name, counting(module, name))
    try:
        yield seen
    finally:
        for (module, name), fn in real.items():
            setattr(module, name, fn)


def _arena_kib(f, shapes: tuple) -> float:
    """The temporaries' arena at these shapes: the symbolic program's plan for them, or the
    specialised module's."""
    if f._exe.symbolic is not None:
        return f._exe.symbolic.binding(shapes).arena_bytes / 1024
    return f._exe.compiled[shapes].layout.arena_bytes / 1024


def bench(name: str, repeat: int, against: str = "symbolic") -> dict:
    batch = 128 if name == "W1" else 64
    args = _data(name, batch, 0)
    spec, sym, small = (_make(name, {"sizes": s}) for s in ("specialize", against, against))
    out = {"cold specialize": _timed(spec, *args), f"cold {against}": _timed(sym, *args)}
    small(*_data(name, 8, 1))  # its choices made at batch 8
    out.update({f"step {k}": v for k, v in
                _steps({"specialize": spec, against: sym, f"{against} from 8": small},
                       args, repeat).items()})
    firsts, warms = [], []
    with _counting_compiles() as compiles:
        for n in (batch - 37, batch + 21, 2 * batch + 3):
            new = _data(name, n, n)
            firsts.append(_timed(sym, *new))
            warms.append(statistics.median(_timed(sym, *new) for _ in range(5)))
    out["new batch first call"] = statistics.median(firsts)
    out["new batch warm step"] = statistics.median(warms)
    out["new batch first/warm"] = statistics.median(f / w for f, w in zip(firsts, warms))
    out["compiles at new batches"] = len(compiles)  # (LLVM compiles and code loads)
    shapes = tuple(a.shape for a in args)
    out["arena KiB specialize"] = _arena_kib(spec, shapes)
    out[f"arena KiB {against}"] = _arena_kib(sym, shapes)
    out["modules"] = len(sym._exe.compiled)  # (specialised: one per batch size)
    out["bindings"] = sym.compile_times.get("bindings")
    out["not symbolic"] = sym._exe.not_symbolic
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--only", default="W1,W5,W6")
    ap.add_argument("--against", default="symbolic", choices=("symbolic", "auto"))
    a = ap.parse_args(argv)
    for name in a.only.split(","):
        r = bench(name, a.repeat, a.against)
        print(name, "  ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                             for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
