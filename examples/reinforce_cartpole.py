"""REINFORCE (Williams, 1992) learns to balance a pole on a cart. The cart-pole is written here in
numpy (the Barto-Sutton-Anderson dynamics of Gym's CartPole: 4-D state, push left or right,
+1 reward per step, the episode ends when the pole leans past 12 degrees, the cart leaves
|x| <= 2.4, or after 200 steps, CartPole-v0's cap). A small MLP policy pi(a|s) (softmax over
2 actions) is trained
by the policy gradient: per batch of episodes, with G_t the discounted return-to-go normalized
over the batch,

    loss = -mean_t log pi(a_t | s_t) * G_t

whose gradient graphc derives and compiles; Adam updates. Episodes run side by side in a
vectorized environment. Training stops when the mean return of the last 100 episodes reaches
195 (the classic "solved" line); then 100 more episodes evaluate the policy.
Run: python examples/reinforce_cartpole.py [--episodes-per-update 10] [--backend llvm]"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import graphc as gc

MAX_STEPS = 200
SOLVED = 195.0


class CartPoles:
    """n cart-poles stepped together (Euler steps of 0.02 s, as in Gym's CartPole)."""

    gravity, cart_mass, pole_mass, half_length, force, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_limit, x_limit = 12 * 2 * np.pi / 360, 2.4

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self.state = np.zeros((n, 4))

    def reset(self) -> np.ndarray:
        self.state = self.rng.uniform(-0.05, 0.05, size=(self.n, 4))
        return self.state.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pushes right (1) or left (0); returns the new states and which episodes ended."""
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(actions == 1, self.force, -self.force)
        cos, sin = np.cos(theta), np.sin(theta)
        total = self.cart_mass + self.pole_mass
        pole_ml = self.pole_mass * self.half_length
        temp = (force + pole_ml * theta_dot ** 2 * sin) / total
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.half_length * (4.0 / 3.0 - self.pole_mass * cos ** 2 / total))
        x_acc = temp - pole_ml * theta_acc * cos / total
        self.state = np.stack([x + self.tau * x_dot, x_dot + self.tau * x_acc,
                               theta + self.tau * theta_dot,
                               theta_dot + self.tau * theta_acc], axis=1)
        done = (np.abs(self.state[:, 0]) > self.x_limit) | (
            np.abs(self.state[:, 2]) > self.theta_limit)
        return self.state.astype(np.float32), done


class Policy:
    """An MLP 4 -> hidden (tanh) -> 2 logits; `probs` for acting, `step` for learning."""

    def __init__(self, hidden: int, lr: float, backend: str, seed: int) -> None:
        self.net = gc.nn.Sequential(
            gc.nn.Dense(4, hidden, activation="tanh", seed=seed, name="hidden"),
            gc.nn.Dense(hidden, 2, seed=seed + 1, name="logits"))
        states = gc.placeholder((None, 4), name="states")
        actions = gc.placeholder((None,), "int64", name="actions")
        # per step: its normalized return times 1/(steps in the batch); 0 on padding
        weights = gc.placeholder((None,), name="weights")
        logits = self.net(states)
        log_pi = gc.sum(gc.log_softmax(logits, axis=1) * gc.one_hot(actions, 2), axis=1)
        loss = -gc.sum(log_pi * weights)
        opt = gc.optim.Adam(lr=lr)
        self.probs = gc.function([states], gc.softmax(logits, axis=1), backend=backend)
        self.step = gc.function([states, actions, weights], loss,
                                updates=opt.updates(loss, self.net.parameters()),
                                backend=backend)


def run_episodes(env: CartPoles, policy: Policy, rng: np.random.Generator) -> dict:
    """One episode per cart-pole, all padded to MAX_STEPS: states (n, T, 4), actions (n, T),
    alive (n, T) (True up to and including each episode's last step), returns (n,)."""
    n = env.n
    states = np.zeros((n, MAX_STEPS, 4), np.float32)
    actions = np.zeros((n, MAX_STEPS), np.int64)
    alive = np.zeros((n, MAX_STEPS), bool)
    s, running = env.reset(), np.ones(n, bool)
    for t in range(MAX_STEPS):
        p = policy.probs(s)
        a = (rng.random(n) < p[:, 1]).astype(np.int64)     # sampled from pi(.|s)
        states[:, t], actions[:, t], alive[:, t] = s, a, running
        s, done = env.step(a)
        running &= ~done
        if not running.any():
            break
    return {"states": states, "actions": actions, "alive": alive,
            "returns": alive.sum(axis=1)}


def step_weights(alive: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns-to-go of +1 rewards, normalized over the batch's real steps, divided
    by their number (the loss is then a mean over steps); 0 on the padding."""
    rewards = alive.astype(np.float64)
    returns = np.zeros_like(rewards)
    running = np.zeros(len(rewards))
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    real = returns[alive]
    normalized = (returns - real.mean()) / (real.std() + 1e-8)
    return np.where(alive, normalized / alive.sum(), 0.0).astype(np.float32)


def evaluate(policy: Policy, episodes: int, seed: int) -> dict:
    """Mean, min and max return of fresh episodes (actions sampled from the policy; the same
    starts and random numbers every call)."""
    env = CartPoles(episodes, np.random.default_rng(seed + 1))
    returns = run_episodes(env, policy, np.random.default_rng(seed + 2))["returns"]
    return {"mean": float(returns.mean()), "min": int(returns.min()), "max": int(returns.max())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes-per-update", type=int, default=10)
    parser.add_argument("--max-updates", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    env = CartPoles(args.episodes_per_update, rng)
    policy = Policy(args.hidden, args.lr, args.backend, args.seed)
    print(f"cart-pole, episodes capped at {MAX_STEPS} steps; {args.episodes_per_update} "
          f"episodes per update; backend={args.backend}")
    before = evaluate(policy, args.eval_episodes, args.seed)
    last_100: collections.deque = collections.deque(maxlen=100)
    history, losses = [], []
    episodes, solved = 0, False
    for update in range(1, args.max_updates + 1):
        batch = run_episodes(env, policy, rng)
        weights = step_weights(batch["alive"], args.gamma)
        losses.append(float(policy.step(batch["states"].reshape(-1, 4),
                                        batch["actions"].reshape(-1), weights.reshape(-1))))
        episodes += env.n
        last_100.extend(batch["returns"].tolist())
        history.append(float(batch["returns"].mean()))
        mean_100 = float(np.mean(last_100))
        solved = len(last_100) == 100 and mean_100 >= SOLVED
        if update % 5 == 0 or solved:
            print(f"update {update:4d}  episodes {episodes:5d}  mean return: this batch "
                  f"{history[-1]:6.1f}, last 100 episodes {mean_100:6.1f}")
        if solved:
            break
    train_seconds = time.perf_counter() - t_start
    print(f"{'solved' if solved else 'NOT solved'} after {episodes} episodes "
          f"({update} updates, {train_seconds:.1f} s including compilation)")

    after = evaluate(policy, args.eval_episodes, args.seed)
    print(f"evaluation, {args.eval_episodes} episodes: mean return {after['mean']:.1f} "
          f"(min {after['min']}, max {after['max']}); before training {before['mean']:.1f}")
    return {"solved": solved, "episodes": episodes, "updates": update,
            "mean_return_last_100": mean_100, "batch_returns": history, "loss": losses,
            "eval_before": before["mean"], "eval": after["mean"],
            "seconds": time.perf_counter() - t_start}


if __name__ == "__main__":
    main()
