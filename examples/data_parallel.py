"""Data-parallel training: the digits MLP of mlp_digits.py on K processes, each computing the
gradient of its share of every batch; the step averages the gradients over the processes
(an all_reduce compiled into it) and applies the update, so every process holds the same
parameters and the run gives the accuracy one process gives with the same global batch.
Run: mpirun -n 4 python examples/data_parallel.py [--backend llvm|numpy] [--quick]
(as root add --allow-run-as-root, or set OMPI_ALLOW_RUN_AS_ROOT=1 and
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; more processes than cores need --oversubscribe)."""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc


def build(hidden: int, lr: float, momentum: float, backend: str, seed: int):
    """The step (job-wide loss out, parameters updated) and the predictor."""
    rng = np.random.default_rng(seed + gc.distributed.rank())  # made equal below
    x = gc.placeholder((None, 64), "float64", name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    W1 = gc.parameter(rng.normal(0, np.sqrt(1 / 64), (64, hidden)), name="W1")
    b1 = gc.parameter(np.zeros(hidden), name="b1")
    W2 = gc.parameter(rng.normal(0, np.sqrt(1 / hidden), (hidden, 10)), name="W2")
    b2 = gc.parameter(np.zeros(10), name="b2")
    weights = [W1, b1, W2, b2]
    gc.distributed.broadcast_parameters(weights)  # every process starts from rank 0's
    logits = gc.tanh(x @ W1 + b1) @ W2 + b2
    loss = gc.nn.cross_entropy(logits, labels)  # this process's share of the batch
    opt = gc.optim.SGD(lr, momentum=momentum)
    # opt.updates averages the gradients over the processes (a no-op for one process)
    step = gc.function([x, labels], gc.distributed.all_reduce(loss), backend=backend,
                       updates=opt.updates(loss, weights))
    predict = gc.function([x], gc.argmax(logits, axis=1), backend=backend)
    return step, predict


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm (default) or numpy")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="the global batch, split over the processes")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 epochs (the test's run)")
    args = parser.parse_args(argv)
    k, rank = gc.distributed.size(), gc.distributed.rank()
    if args.batch_size % k:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of the {k} processes")
    epochs = 3 if args.quick else args.epochs

    data = gc.data.load_digits(seed=args.seed, dtype="float64")
    if rank == 0:
        print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, "
              f"{k} process(es), global batch {args.batch_size}, backend={args.backend}")
    t0 = time.perf_counter()
    step, predict = build(args.hidden, args.lr, args.momentum, args.backend, args.seed)

    def evaluate() -> dict:
        return {"accuracy": float(np.mean(predict(data.x_test) == data.y_test))}

    # fit gives each process its share of every global batch and prints on rank 0 only;
    # drop_last: a short last batch would split unevenly (a mean of unequal means)
    history = gc.train.fit(step, (data.x_train, data.y_train), epochs,
                           args.batch_size // k, eval_fn=evaluate, seed=args.seed,
                           progress=False, drop_last=True)
    accuracy = history.metrics["accuracy"][-1]
    if rank == 0:
        print(f"trained in {time.perf_counter() - t0:.2f} s")
        print(f"final test accuracy: {accuracy:.2%}  final loss: {history.loss[-1]:.12f}")
    return {"accuracy": accuracy, "loss": history.loss}


if __name__ == "__main__":
    main()
