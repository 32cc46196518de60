"""The bound-constrained Newton minimiser and its convergence reporting."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_max_steps_is_reported_with_the_certificate_at_the_last_point():
    sol = minimise(rosenbrock, jnp.array([-1.2, 1.0]), jnp.array([-jnp.inf, -jnp.inf]), max_steps=2)
    assert int(sol.result) == RESULTS.max_steps_reached and int(sol.steps) == 2
    # The loop certifies where it stops, after its last step: value, gradient and curvature are those at x.
    assert float(sol.value) == pytest.approx(float(rosenbrock(sol.x)), rel=1e-14)  # the same up to rounding
    np.testing.assert_allclose(sol.grad, jax.grad(rosenbrock)(sol.x), rtol=1e-12)
    assert float(sol.min_eig) == pytest.approx(np.linalg.eigvalsh(jax.hessian(rosenbrock)(sol.x))[0], rel=1e-12)
    assert float(sol.decrement) > 1e-3  # two steps from the start: far from converged


def test_snap_sets_a_near_bound_coordinate_to_it_only_if_no_worse():
    lower = jnp.array([0.0, -jnp.inf])
    # Optimum at x0 = 1e-6: on the bound the objective is 1e-12 worse, within rounding of 10: snapped.
    flat = lambda x: 10.0 + (x[0] - 1e-6) ** 2 + (x[1] - 2.0) ** 2  # noqa: E731
    sol = minimise(flat, jnp.array([1.0, 0.0]), lower, snap=1e-4)
    assert float(sol.x[0]) == 0.0 and float(sol.value) == pytest.approx(float(flat(sol.x)), rel=1e-15)
    assert float(sol.grad[0]) == -2e-6 and bool(sol.free[0])  # certified at the snapped point
    assert int(sol.result) == RESULTS.successful
    assert float(minimise(flat, jnp.array([1.0, 0.0]), lower).x[0]) == pytest.approx(1e-6, rel=1e-6)  # no snap
    # Optimum at x0 = 1e-5 with curvature 1e3: the bound is 1e-7 worse, beyond rounding: not snapped.
    steep = lambda x: 10.0 + 1e3 * (x[0] - 1e-5) ** 2 + (x[1] - 2.0) ** 2  # noqa: E731
    assert float(minimise(steep, jnp.array([1.0, 0.0]), lower, snap=1e-4).x[0]) == pytest.approx(1e-5, rel=1e-6)


def test_unconverged_fit_is_flagged(hsb):
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", hsb)
    assert r.converged and not any("convergence" in w for w in r.warnings)
    bad = dataclasses.replace(r, convergence=Convergence(RESULTS.max_steps_reached, 200, 0.3, 0.02, 5.0))
    assert not bad.converged
    assert "convergence not achieved" in str(bad.summary())
    assert "maximum number of Newton steps" in bad.warnings[-1]
    assert bad.to_dict()["converged"] is False


def test_no_stop_within_eps_of_the_bound(hsb):
    """A coordinate held within ε of its bound (Bertsekas' active set) but not on it still has its projected step
    to take: random-intercept fits to responses drawn without random effects, whose EM starts land near σ_u = 0,
    once stopped at the start, up to 1.3 below the linear model's own log likelihood. Each must now be at least as
    good as the linear model (its boundary) and certified."""
    lin = jaxhlm.mixed("mathach ses", hsb)
    Y = np.asarray(jaxhlm.simulate(lin, 8, seed=4)).T
    for r in range(Y.shape[1]):
        data = hsb.assign(mathach=Y[:, r])
        big, small = jaxhlm.mixed("mathach ses || id:", data), jaxhlm.mixed("mathach ses", data)
        assert big.llf >= small.llf - 1e-9
        assert big.converged and big.convergence.decrement < 1e-6
