"""A neural network for the fixed part plus a random intercept per group, trained on the marginal likelihood.

Why: with grouped data (users, patients, schools) a network fitted by least squares either ignores the groups
(and its errors keep each group's offset) or memorises them (and has nothing to say about a new group).
A random intercept does both jobs: the network learns the population-level function f(x), the variance
components say how far groups stray from it, and each seen group's offset is its BLUP, shrunk toward zero
by its size. New groups get f(x).

The data are synthetic and seeded: y = f(x) + b_g + e with f nonlinear in 4 features, b_g ~ N(0, 1.5²),
e ~ N(0, 0.5²), 200 groups of 10–60 rows. 150 groups are seen in training, with 20% of their rows held out;
50 groups are never seen. Two models with the same MLP (4-32-32-1, tanh) and the same optax Adam schedule:

  mixed:   loss = −log p(y | f_w(x), τ², σ²) / N, the marginal likelihood (jaxhlm.functional), over w, τ, σ;
           predictions f_w(x) + b̂_g (b̂ from jaxhlm.functional.random_effects), f_w(x) for unseen groups.
  MLP:     loss = mean squared error of f_w(x); predictions f_w(x).

Run: ``python experiments/neural_mixed.py [--steps 3000] [--seed 0]`` (part of ``make bench``). Prints the
held-out RMSE on rows of seen groups and on unseen groups, the estimated variances, and training times.
"""

from __future__ import annotations

import argparse
import time

import jaxhlm  # noqa: F401  (first: float64, and quiet loading of cached programs)
from jaxhlm import functional as F

import jax
import jax.numpy as jnp
import numpy as np
import optax

TAU, SIGMA = 1.5, 0.5


def truth(x: np.ndarray) -> np.ndarray:
    return np.sin(2.0 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 3] + 0.3 * x[:, 0]


def make_data(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 61, 200)
    group = np.repeat(np.arange(200), sizes)
    x = rng.normal(size=(len(group), 4))
    b = TAU * rng.normal(size=200)
    y = truth(x) + b[group] + SIGMA * rng.normal(size=len(group))
    seen = group < 150
    held = seen & (rng.uniform(size=len(group)) < 0.2)
    return {"x": x, "y": y, "group": group, "train": seen & ~held, "held": held, "unseen": ~seen}


def init_mlp(key: jax.Array, sizes: tuple[int, ...] = (4, 32, 32, 1)) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    for W, c in params[:-1]:
        x = jnp.tanh(x @ W + c)
    W, c = params[-1]
    return (x @ W + c)[:, 0]


def variance_params(log_sd: jax.Array) -> F.Params:
    """The mean is the network's output: X = f(x) as one column with β = 1."""
    return F.Params(beta=jnp.ones(1), cov_re=jnp.exp(2.0 * log_sd[0]).reshape(1, 1), sigma2=jnp.exp(2.0 * log_sd[1]))


def train(loss, params, steps: int) -> tuple[object, float]:
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, steps))
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    params, state, _ = step(params, state)  # compile outside the clock
    jax.block_until_ready(params)
    start = time.perf_counter()
    for _ in range(steps - 1):
        params, state, value = step(params, state)
    jax.block_until_ready(params)
    return params, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    d = make_data(args.seed)
    tr = d["train"]
    x, y, g = jnp.asarray(d["x"][tr]), jnp.asarray(d["y"][tr]), d["group"][tr]
    ones = np.ones((len(g), 1))
    n = len(g)

    def mixed_loss(p):
        net, log_sd = p
        data = F.group_data(mlp(net, x)[:, None], ones, y, g)  # differentiable in the network's output
        return -F.marginal_loglik(variance_params(log_sd), data) / n

    def mse_loss(net):
        return jnp.mean((mlp(net, x) - y) ** 2)

    key = jax.random.PRNGKey(args.seed)
    (net_m, log_sd), t_mixed = train(mixed_loss, (init_mlp(key), jnp.zeros(2)), args.steps)
    net_o, t_mlp = train(mse_loss, init_mlp(key), args.steps)

    P = variance_params(log_sd)
    b, _ = F.random_effects(P, F.group_data(mlp(net_m, x)[:, None], ones, y, g))
    labels = np.unique(g)

    def rmse(mask: np.ndarray, with_re: bool, net) -> float:
        xs = jnp.asarray(d["x"][mask])
        f = mlp(net, xs)
        if with_re:
            f = F.predict(P, b, f[:, None], np.ones((int(mask.sum()), 1)), F.group_codes(labels, d["group"][mask]))
        return float(np.sqrt(np.mean((np.asarray(f) - d["y"][mask]) ** 2)))

    floor_seen = SIGMA  # the noise: no predictor does better on average
    floor_new = float(np.sqrt(SIGMA**2 + TAU**2))  # noise + an unknown group offset
    print(f"neural_mixed: {len(labels)} seen groups ({n} training rows), {int(d['held'].sum())} held-out rows "
          f"of seen groups, {int(d['unseen'].sum())} rows of 50 unseen groups; {args.steps} Adam steps each "
          f"(jax {jax.__version__}, {jax.devices()[0].platform})")
    print(f"{'model':<22}{'RMSE seen groups':>18}{'RMSE unseen groups':>20}{'train s':>9}")
    print(f"{'MLP + random intercept':<22}{rmse(d['held'], True, net_m):>18.3f}{rmse(d['unseen'], True, net_m):>20.3f}"
          f"{t_mixed:>9.2f}")
    print(f"{'MLP alone (MSE)':<22}{rmse(d['held'], False, net_o):>18.3f}{rmse(d['unseen'], False, net_o):>20.3f}"
          f"{t_mlp:>9.2f}")
    print(f"{'floor (true f and b)':<22}{floor_seen:>18.3f}{floor_new:>20.3f}")
    print(f"estimated sd(group) {float(jnp.sqrt(P.cov_re[0, 0])):.3f} (truth {TAU}), "
          f"sd(residual) {float(jnp.sqrt(P.sigma2)):.3f} (truth {SIGMA})")


if __name__ == "__main__":
    main()
