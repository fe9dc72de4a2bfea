"""word2vec, skip-gram with negative sampling (Mikolov et al., 2013), on the English
documentation that ships inside CPython itself (pydoc_data.topics: ~80 help topics, ~465k
characters; no download). Two embedding tables, a center word's vector v_c and a context
word's vector u_o, trained so that sigma(u_o . v_c) is high for words seen together and
sigma(u_k . v_c) low for words drawn from the unigram^0.75 distribution:

    loss = -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)

through a compiled gc.function step with Adagrad updates. Prints the loss per epoch, the nearest
neighbours (cosine) of a few query words, and how close hand-picked related pairs (int/float,
true/false, key/value, ...) sit before and after training.
Run: python examples/word2vec.py [--epochs 20] [--dim 50] [--backend llvm]"""
from __future__ import annotations

import argparse
import collections
import re
import time
from typing import Iterator

import numpy as np

import graphc as gc

QUERIES = ("list", "int", "float", "true", "class", "exception", "import", "iterator", "await",
           "positional")
# Related pairs to score: partners that the docs use in the same kinds of sentences.
PAIRS = (("int", "float"), ("list", "tuple"), ("true", "false"), ("key", "value"),
         ("str", "bytes"), ("keys", "values"), ("break", "continue"), ("try", "except"),
         ("positional", "keyword"), ("local", "global"), ("getattr", "setattr"),
         ("async", "await"), ("left", "right"), ("first", "last"), ("two", "three"),
         ("method", "function"), ("class", "instance"), ("argument", "parameter"))


class Corpus:
    """Lower-case words of the bundled docs, as ids into a vocabulary of the words seen at
    least min_count times (most frequent first); rarer words are dropped."""

    def __init__(self, min_count: int) -> None:
        from pydoc_data.topics import topics
        text = "\n".join(topics[key] for key in sorted(topics))
        words = re.findall(r"[a-z]+", text.lower())
        counts = collections.Counter(words)
        kept = sorted((w for w, n in counts.items() if n >= min_count),
                      key=lambda w: (-counts[w], w))
        self.n_words, self.n_chars = len(words), len(text)
        self.vocab = kept
        self.index = {w: i for i, w in enumerate(kept)}
        self.counts = np.array([counts[w] for w in kept], np.float64)
        self.ids = np.array([self.index[w] for w in words if w in self.index], np.int64)

    def pairs(self, window: int, subsample: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """(center, context) ids of one epoch: a word of frequency f is kept with probability
        sqrt(t/f) + t/f (word2vec's subsampling: "the" mostly goes, rare words stay), then each
        center sees a window of random width 1..window on each side (nearer words are paired
        more often)."""
        freq = self.counts / self.counts.sum()
        keep = np.minimum(1.0, np.sqrt(subsample / freq) + subsample / freq)
        ids = self.ids[rng.random(self.ids.size) < keep[self.ids]]
        width = rng.integers(1, window + 1, size=ids.size)
        centers, contexts = [], []
        for d in range(1, window + 1):
            # pairs (i, i + d) and (i, i - d) where d is inside center i's window
            for center, context, near in ((ids[:-d], ids[d:], width[:-d] >= d),
                                          (ids[d:], ids[:-d], width[d:] >= d)):
                centers.append(center[near])
                contexts.append(context[near])
        return np.concatenate(centers), np.concatenate(contexts)


def batches(corpus: Corpus, window: int, subsample: float, negatives: int, batch_size: int,
            rng: np.random.Generator, max_steps: int | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One epoch of shuffled (centers, contexts, negatives) batches; whole batches only, so
    every step has the same shapes (the LLVM backend compiles once per shapes)."""
    centers, contexts = corpus.pairs(window, subsample, rng)
    order = rng.permutation(centers.size)
    n_steps = centers.size // batch_size
    if max_steps:
        n_steps = min(n_steps, max_steps)
    noise_p = corpus.counts ** 0.75     # the unigram distribution raised to 3/4
    noise = rng.choice(len(noise_p), size=(n_steps, batch_size, negatives),
                       p=noise_p / noise_p.sum())
    for i in range(n_steps):
        batch = order[i * batch_size:(i + 1) * batch_size]
        yield centers[batch], contexts[batch], noise[i]


def build(vocab_size: int, dim: int, negatives: int, lr: float, backend: str, seed: int):
    """The skip-gram step: ids of centers (B,), contexts (B,) and negatives (B, K) -> the
    mean loss per pair, with Adagrad updates of both tables (Adagrad scales each row by its
    own gradient history: rare words take big steps, frequent ones small)."""
    rng = np.random.default_rng(seed)
    # word2vec's own initialisation: small random center vectors, zero context vectors
    v_table = gc.parameter(rng.uniform(-0.5 / dim, 0.5 / dim, (vocab_size, dim))
                           .astype(np.float32), name="center_vectors")
    u_table = gc.parameter(np.zeros((vocab_size, dim), np.float32), name="context_vectors")
    center = gc.placeholder((None,), "int64", name="center")
    context = gc.placeholder((None,), "int64", name="context")
    noise = gc.placeholder((None, negatives), "int64", name="negatives")
    v = gc.take(v_table, center, axis=0)                               # (B, D)
    positive = gc.sum(gc.take(u_table, context, axis=0) * v, axis=1)   # (B,)
    negative = gc.sum(gc.take(u_table, noise, axis=0) * v[:, None, :], axis=2)  # (B, K)
    # -log sigma(z) = softplus(-z), and -log sigma(-z) = softplus(z): stable for any z
    loss = gc.mean(gc.softplus(-positive) + gc.sum(gc.softplus(negative), axis=1))
    opt = gc.optim.Adagrad(lr=lr)
    step = gc.function([center, context, noise], loss,
                       updates=opt.updates(loss, [v_table, u_table]), backend=backend)
    return step, v_table, u_table


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def neighbours(sim: np.ndarray, vocab: list[str], word_id: int, k: int) -> list[str]:
    order = np.argsort(-sim[word_id], kind="stable")
    return [vocab[j] for j in order if j != word_id][:k]


def pair_scores(sim: np.ndarray, pairs: list[tuple[int, int]], rng: np.random.Generator
                ) -> dict:
    """For each related pair (a, b), in both directions: the rank of b among all words by
    cosine to a (1 = the nearest), and the pair's cosine against a random word's."""
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)          # a word is not its own neighbour
    ranks = [1 + int(np.sum(sim[a] > sim[a, b])) for p in pairs for a, b in (p, p[::-1])]
    random_words = rng.integers(0, len(sim), size=(len(pairs), 20))
    random_cos = np.mean([sim[a, r][r != a].mean() for (a, _), r in zip(pairs, random_words)])
    return {"median_rank": float(np.median(ranks)), "mean_rank": float(np.mean(ranks)),
            "pair_cosine": float(np.mean([sim[a, b] for a, b in pairs])),
            "random_cosine": float(random_cos)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=50, help="embedding size")
    parser.add_argument("--window", type=int, default=5, help="context words on each side")
    parser.add_argument("--negatives", type=int, default=5, help="noise words per pair")
    parser.add_argument("--min-count", type=int, default=5, help="drop rarer words")
    parser.add_argument("--subsample", type=float, default=1e-3,
                        help="frequent-word subsampling threshold t")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.1, help="Adagrad learning rate")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each epoch after this many steps (quick runs)")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    corpus = Corpus(args.min_count)
    vocab = corpus.vocab
    print(f"pydoc topics: {corpus.n_chars:,} characters, {corpus.n_words:,} words, "
          f"{len(vocab):,} words seen >= {args.min_count} times; backend={args.backend}")
    pairs = [(corpus.index[a], corpus.index[b]) for a, b in PAIRS
             if a in corpus.index and b in corpus.index]
    queries = [w for w in QUERIES if w in corpus.index]

    step, v_table, u_table = build(len(vocab), args.dim, args.negatives, args.lr,
                                   args.backend, args.seed)
    before = pair_scores(cosine_matrix(v_table.value), pairs, np.random.default_rng(1))
    rng = np.random.default_rng(args.seed)
    losses = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        epoch_losses = [float(step(*batch)) for batch in batches(
            corpus, args.window, args.subsample, args.negatives, args.batch_size, rng,
            args.max_steps)]
        losses.extend(epoch_losses)
        rate = len(epoch_losses) * args.batch_size / (time.perf_counter() - t0)
        print(f"epoch {epoch:2d}  loss {np.mean(epoch_losses):.4f}  ({len(epoch_losses)} "
              f"steps of {args.batch_size} pairs, {rate:,.0f} pairs/s)")

    sim = cosine_matrix(v_table.value)
    after = pair_scores(sim, pairs, np.random.default_rng(1))
    print("\nnearest neighbours (cosine of the center vectors):")
    found = {}
    for word in queries:
        found[word] = neighbours(sim, vocab, corpus.index[word], 6)
        print(f"  {word:<11} {', '.join(found[word])}")
    print(f"\n{len(pairs)} related pairs (int/float, true/false, key/value, ...), rank of the "
          f"partner among {len(vocab) - 1} words:")
    for label, s in (("untrained", before), ("trained", after)):
        print(f"  {label:<10} median rank {s['median_rank']:6.1f}  mean rank "
              f"{s['mean_rank']:6.1f}  pair cosine {s['pair_cosine']:+.3f}  "
              f"(random words {s['random_cosine']:+.3f})")
    elapsed = time.perf_counter() - t_start
    print(f"\n{elapsed:.1f} s in all, including compilation")
    return {"loss": losses, "before": before, "after": after, "neighbours": found,
            "vocab_size": len(vocab), "seconds": elapsed}


if __name__ == "__main__":
    main()
