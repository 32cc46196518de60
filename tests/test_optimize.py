"""The bound-constrained Newton minimiser and its convergence reporting."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

import jaxhlm
from jaxhlm.optimize import RESULTS, minimise
from jaxhlm.results import Convergence


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def test_unconstrained_minimum():
    sol = minimise(rosenbrock, jnp.array([-1.2, 1.0]), jnp.array([-jnp.inf, -jnp.inf]))
    assert int(sol.result) == RESULTS.successful
    np.testing.assert_allclose(sol.x, [1.0, 1.0], atol=1e-8)
    assert float(sol.min_eig) > 0 and float(sol.decrement) < 1e-12


def test_bound_is_reached_exactly_and_held():
    # Unconstrained minimum at (-1, 2); with x0 >= 0 the optimum is x0 = 0 exactly, pushed outward.
    f = lambda x: (x[0] + 1) ** 2 + (x[1] - 2) ** 2 + 0.5 * x[0] * x[1]  # noqa: E731
    sol = minimise(f, jnp.array([3.0, 3.0]), jnp.array([0.0, -jnp.inf]))
    assert float(sol.x[0]) == 0.0 and not bool(sol.free[0])
    assert float(sol.grad[0]) == 0.0 and abs(float(sol.grad[1])) < 1e-8


def test_escapes_saddle_on_the_bound():
    # Even in x0 with a maximum at x0 = 0: starting there, the gradient vanishes but x0 = 0 is no minimum.
    f = lambda x: -(x[0] ** 2) + x[0] ** 4 + (x[1] - 1) ** 2  # noqa: E731
    sol = minimise(f, jnp.array([0.0, 0.0]), jnp.array([0.0, -jnp.inf]), even=jnp.array([True, False]))
    np.testing.assert_allclose(sol.x, [np.sqrt(0.5), 1.0], atol=1e-8)


def test_max_steps_is_reported():
    sol = minimise(rosenbrock, jnp.array([-1.2, 1.0]), jnp.array([-jnp.inf, -jnp.inf]), max_steps=2)
    assert int(sol.result) == RESULTS.max_steps_reached and int(sol.steps) == 2


def test_unconverged_fit_is_flagged(hsb):
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb)
    assert r.converged and not any("convergence" in w for w in r.warnings)
    bad = dataclasses.replace(r, convergence=Convergence(RESULTS.max_steps_reached, 200, 0.3, 0.02, 5.0))
    assert not bad.converged
    assert "convergence not achieved" in str(bad.summary())
    assert "maximum number of Newton steps" in bad.warnings[-1]
    assert bad.to_dict()["converged"] is False
