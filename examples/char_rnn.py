"""A character-level language model (char-RNN): an LSTM learns to predict the next character of
the English documentation that ships inside CPython itself (pydoc_data.topics: ~80 help topics,
~465k characters; no download), the last tenth held out.

    embedding (V -> E) -> gc.nn.LSTM (E -> H) -> dense (H -> V) -> softmax over the next character

trained by truncated backpropagation through time: the text is cut into `batch` parallel
streams, each step reads the next `seq` characters of every stream, and the LSTM's state (h, c)
carries from one step to the next (its gradient stops at the window's start). The held-out text
is scored the same way, state carried, in bits per character (the mean of -log2 p(next char)),
next to two baselines fitted on the training text: the unigram (character frequencies) and the
bigram (the next character given the previous one), both add-one smoothed. Prints progress,
samples drawn from the model while it trains, and `--out path.png` draws the loss curve (when
matplotlib is installed). `--quick` is the test's short run.
Run: python examples/char_rnn.py [--epochs 3] [--hidden 256] [--backend llvm] [--quick]
     [--out char_rnn.png]"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import graphc as gc

PROMPT = "The "


class Text:
    """The pydoc topics as ids into the vocabulary of every character they use; the last
    `held_out` share is the validation text."""

    def __init__(self, held_out: float) -> None:
        from pydoc_data.topics import topics
        text = "\n".join(topics[key] for key in sorted(topics))
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        ids = np.array([self.index[c] for c in text], np.int64)
        cut = int(len(ids) * (1 - held_out))
        self.train, self.valid = ids[:cut], ids[cut:]

    @property
    def vocab(self) -> int:
        return len(self.chars)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def streams(ids: np.ndarray, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (steps, seq, batch): `batch` contiguous streams of the text,
    read `seq` characters at a time (time first, as the LSTM takes it)."""
    per_stream = (len(ids) - 1) // batch
    steps = per_stream // seq
    if steps < 1:
        raise ValueError(f"the text ({len(ids)} characters) is too short for {batch} streams "
                         f"of {seq} characters")
    used = steps * seq

    def cut(a: np.ndarray) -> np.ndarray:
        grid = a[:batch * per_stream].reshape(batch, per_stream)[:, :used]
        return grid.reshape(batch, steps, seq).transpose(1, 2, 0)
    return cut(ids[:-1]), cut(ids[1:])


def baselines(train: np.ndarray, valid: np.ndarray, vocab: int) -> dict[str, float]:
    """Held-out bits per character of the add-one smoothed unigram and bigram models."""
    uni = np.bincount(train, minlength=vocab) + 1.0
    uni /= uni.sum()
    pairs = np.zeros((vocab, vocab))
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    pairs += 1.0
    pairs /= pairs.sum(axis=1, keepdims=True)
    return {"unigram": float(-np.mean(np.log2(uni[valid]))),
            "bigram": float(-np.mean(np.log2(pairs[valid[:-1], valid[1:]])))}


class Model:
    """The network and its compiled functions: a training step, a held-out scorer (both on
    (seq, batch) windows, the state carried in and out) and a one-character sampler."""

    def __init__(self, vocab: int, embed: int, hidden: int, seq: int, batch: int, lr: float,
                 backend: str, seed: int) -> None:
        self.hidden = hidden
        rng = np.random.default_rng(seed)
        self.embed = gc.nn.Embedding(vocab, embed, seed=rng, name="embed")
        self.lstm = gc.nn.LSTM(embed, hidden, seed=rng, name="lstm")
        self.head = gc.nn.Dense(hidden, vocab, seed=rng, name="head")
        params = self.embed.parameters() + self.lstm.parameters() + self.head.parameters()

        def scored(t: int, n: int):
            ids = gc.placeholder((t, n), "int64", name="ids")
            targets = gc.placeholder((t, n), "int64", name="targets")
            h0 = gc.placeholder((n, hidden), name="h0")
            c0 = gc.placeholder((n, hidden), name="c0")
            logits, (h, c) = self.logits(ids, h0, c0)
            loss = gc.nn.cross_entropy(logits, gc.reshape(targets, (-1,)))
            return [ids, targets, h0, c0], loss, h, c

        inputs, loss, h, c = scored(seq, batch)
        opt = gc.optim.Adam(lr=lr, clip_norm=5.0)
        self.step = gc.function(inputs, [loss, h, c], updates=opt.updates(loss, params),
                                backend=backend)
        inputs, loss, h, c = scored(seq, batch)
        self.score = gc.function(inputs, [loss, h, c], backend=backend)
        ids = gc.placeholder((1, 1), "int64", name="ids")
        h0, c0 = gc.placeholder((1, hidden), name="h0"), gc.placeholder((1, hidden), name="c0")
        logits, (h, c) = self.logits(ids, h0, c0)
        self.next_char = gc.function([ids, h0, c0], [gc.softmax(logits[0]), h, c],
                                     backend=backend)

    def logits(self, ids, h0, c0):
        """(T*N, V) logits of the characters that follow ids (T, N), and the final state."""
        out, state = self.lstm(self.embed(ids), (h0, c0))
        return self.head(gc.reshape(out, (-1, self.hidden))), state

    def zeros(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n, self.hidden), np.float32), np.zeros((n, self.hidden), np.float32)

    def held_out_bits(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        h, c = self.zeros(inputs.shape[2])
        total = 0.0
        for x, y in zip(inputs, targets):
            loss, h, c = self.score(x, y, h, c)
            total += float(loss)
        return total / len(inputs) / math.log(2)

    def sample(self, text: Text, length: int, temperature: float,
               rng: np.random.Generator) -> str:
        h, c = self.zeros(1)
        out = list(PROMPT)
        probs = None
        for ch in PROMPT:  # read the prompt, then write
            probs, h, c = self.next_char(np.array([[text.index[ch]]]), h, c)
        for _ in range(length):
            p = np.exp(np.log(np.maximum(probs.astype(np.float64), 1e-30)) / temperature)
            i = int(rng.choice(len(p), p=p / p.sum()))
            out.append(text.chars[i])
            probs, h, c = self.next_char(np.array([[i]]), h, c)
        return "".join(out)


def save_plot(path: str, curve: list[tuple[int, float]], held: list[tuple[int, float]],
              base: dict[str, float]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*curve), lw=1, alpha=0.7, label="training windows")
    ax.plot(*zip(*held), marker="o", label="held-out text")
    for (name, bits), style in zip(base.items(), ("--", ":")):
        ax.axhline(bits, color="gray", ls=style, label=f"{name} baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title("char-RNN (LSTM) on the pydoc topics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"loss curve saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--embed", type=int, default=64, help="embedding size")
    parser.add_argument("--hidden", type=int, default=256, help="LSTM state size")
    parser.add_argument("--seq", type=int, default=64, help="characters per window")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each epoch after this many steps (quick runs)")
    parser.add_argument("--report-every", type=int, default=50, help="steps between lines")
    parser.add_argument("--sample-length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save the loss curve here (.png)")
    parser.add_argument("--quick", action="store_true",
                        help="a small model for a few steps (the test's run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.hidden, args.embed, args.seq = 1, 64, 16, 16
        args.max_steps = args.max_steps or 40
        args.report_every, args.sample_length = 20, 60

    t_start = time.perf_counter()
    text = Text(held_out=0.1)
    base = baselines(text.train, text.valid, text.vocab)
    print(f"pydoc topics: {len(text.train):,} training and {len(text.valid):,} held-out "
          f"characters, {text.vocab} distinct; backend={args.backend}")
    print(f"baselines on the held-out text: unigram {base['unigram']:.3f}, bigram "
          f"{base['bigram']:.3f} bits per character")
    train_x, train_y = streams(text.train, args.batch, args.seq)
    valid_x, valid_y = streams(text.valid, args.batch, args.seq)
    if args.quick:
        valid_x, valid_y = valid_x[:8], valid_y[:8]

    model = Model(text.vocab, args.embed, args.hidden, args.seq, args.batch, args.lr,
                  args.backend, args.seed)
    rng = np.random.default_rng(args.seed)
    curve: list[tuple[int, float]] = []
    held: list[tuple[int, float]] = []
    samples: list[str] = []
    step = 0
    train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        h, c = model.zeros(args.batch)
        n_steps = len(train_x) if args.max_steps is None else min(len(train_x), args.max_steps)
        window: list[float] = []
        t0 = time.perf_counter()
        for i in range(n_steps):
            loss, h, c = model.step(train_x[i], train_y[i], h, c)
            step += 1
            bits = float(loss) / math.log(2)
            curve.append((step, bits))
            window.append(bits)
            if (i + 1) % args.report_every == 0 or i + 1 == n_steps:
                rate = len(window) * args.seq * args.batch / (time.perf_counter() - t0)
                print(f"epoch {epoch}  step {i + 1:4d}/{n_steps}  training {np.mean(window):.3f} "
                      f"bits/char  ({rate:,.0f} chars/s)")
                train_seconds += time.perf_counter() - t0
                window = []
                t0 = time.perf_counter()
        valid_bits = model.held_out_bits(valid_x, valid_y)
        held.append((step, valid_bits))
        samples.append(model.sample(text, args.sample_length, args.temperature, rng))
        print(f"epoch {epoch}  held-out {valid_bits:.3f} bits/char; a sample:\n"
              f"  {samples[-1]!r}")

    elapsed = time.perf_counter() - t_start
    print(f"\nheld-out bits per character: LSTM {held[-1][1]:.3f}, bigram {base['bigram']:.3f}, "
          f"unigram {base['unigram']:.3f}")
    print(f"{elapsed:.1f} s in all, including compilation ({train_seconds:.1f} s in training "
          "steps)")
    plotted = save_plot(args.out, curve, held, base) if args.out else None
    return {"train_bits": [b for _, b in curve], "held_out_bits": [b for _, b in held],
            "baselines": base, "samples": samples, "seconds": elapsed, "plot": plotted}


if __name__ == "__main__":
    main()
