"""Examples 7 and 8 (word2vec on the pydoc topics, REINFORCE on a cart-pole) in shortened runs
on both backends: they learn, and the two backends give the same losses step for step."""
from __future__ import annotations

import numpy as np
import pytest

from example_loader import load_example

pytestmark = pytest.mark.slow  # trains word2vec and a policy


# ---- word2vec ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_word2vec_short_run_puts_related_words_close(backend, capsys):
    res = load_example("word2vec").main(["--epochs", "1", "--max-steps", "500",
                                         "--backend", backend])
    before, after = res["before"], res["after"]
    # untrained, a partner ranks about halfway down the ~1,300-word vocabulary
    assert before["median_rank"] > 200
    assert after["median_rank"] < 40 and after["mean_rank"] < 0.3 * before["mean_rank"]
    # related pairs are closer than a word and random other words
    assert after["pair_cosine"] > after["random_cosine"] + 0.15
    assert np.mean(res["loss"][-50:]) < 0.9 * np.mean(res["loss"][:50])
    assert "positional" in res["neighbours"] and "keyword" in res["neighbours"]["positional"][:3]
    out = capsys.readouterr().out
    assert "nearest neighbours" in out and "median rank" in out


def test_word2vec_same_losses_on_numpy_and_llvm():
    w2v = load_example("word2vec")
    corpus = w2v.Corpus(min_count=5)
    batches = list(w2v.batches(corpus, window=5, subsample=1e-3, negatives=5, batch_size=128,
                               rng=np.random.default_rng(3), max_steps=6))
    runs = {}
    for backend in ("numpy", "llvm"):
        step, v_table, u_table = w2v.build(len(corpus.vocab), dim=16, negatives=5, lr=0.1,
                                           backend=backend, seed=7)
        runs[backend] = ([float(step(*b)) for b in batches], v_table.value, u_table.value)
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-4)
    np.testing.assert_allclose(runs["llvm"][1], runs["numpy"][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(runs["llvm"][2], runs["numpy"][2], rtol=1e-4, atol=1e-6)
    assert runs["numpy"][0][-1] < runs["numpy"][0][0]


# ---- REINFORCE on the cart-pole ------------------------------------------------------------
def test_cartpole_random_policy_falls_fast():
    """The baseline the learning test beats: a coin-flip policy lasts about 22 steps."""
    rl = load_example("reinforce_cartpole")

    class Coin:
        def probs(self, states: np.ndarray) -> np.ndarray:
            return np.full((len(states), 2), 0.5, np.float32)

    env = rl.CartPoles(200, np.random.default_rng(0))
    returns = rl.run_episodes(env, Coin(), np.random.default_rng(1))["returns"]
    assert 15 < returns.mean() < 30 and returns.max() < 100


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_reinforce_short_run_learns(backend, capsys):
    res = load_example("reinforce_cartpole").main(["--max-updates", "15", "--eval-episodes", "50",
                                            "--backend", backend])
    assert res["updates"] == 15 and res["episodes"] == 150 and not res["solved"]
    # a random policy lasts ~22 steps; 150 training episodes lift the policy well above it
    assert res["eval_before"] < 40 and res["eval"] >= 60
    assert np.mean(res["batch_returns"][-3:]) > 2 * np.mean(res["batch_returns"][:3])
    out = capsys.readouterr().out
    assert "mean return" in out and "evaluation" in out


def test_reinforce_same_losses_on_numpy_and_llvm():
    """One fixed batch of trajectories, a few Adam steps on it on each backend."""
    rl = load_example("reinforce_cartpole")
    sampler = rl.Policy(hidden=16, lr=0.01, backend="numpy", seed=5)
    batch = rl.run_episodes(rl.CartPoles(8, np.random.default_rng(2)), sampler,
                            np.random.default_rng(4))
    args = (batch["states"].reshape(-1, 4), batch["actions"].reshape(-1),
            rl.step_weights(batch["alive"], 0.99).reshape(-1))
    losses, params = {}, {}
    for backend in ("numpy", "llvm"):
        policy = rl.Policy(hidden=16, lr=0.01, backend=backend, seed=5)
        losses[backend] = [float(policy.step(*args)) for _ in range(5)]
        params[backend] = [p.value for p in policy.net.parameters()]
    np.testing.assert_allclose(losses["llvm"], losses["numpy"], rtol=1e-4, atol=1e-7)
    for a, b in zip(params["llvm"], params["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert len(set(losses["numpy"])) == 5   # the steps did change the policy
