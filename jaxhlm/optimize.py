"""A bound-constrained Newton minimiser with the exact autodiff Hessian, as one pure JAX loop.

Why Newton: θ has a handful of coordinates, and the exact Hessian is cheap (one forward-over-reverse pass
per coordinate), so each step is nearly free and convergence is quadratic. Derivative-free optimisers stop
short on flat likelihoods (lme4 on the three-slope HSB model stops 0.006 below the optimum).

Why projected: optima on the boundary of the covariance space (a zero variance, a correlation of ±1, a
rank-deficient Σ) are common. Bounds ``x >= lower`` are handled by Bertsekas' projected Newton method:
coordinates at their bound whose gradient pushes outward are held fixed (the active set); the Newton step
uses the eigenvalue-modified Hessian of the free coordinates; an Armijo search runs along the projected
arc. The loop stops on a certificate (the Newton decrement), not after a fixed number of steps.

The whole loop is a ``lax.while_loop``: it jits, vmaps over batches of problems and runs on any device.
"""

from __future__ import annotations

import enum
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


class RESULTS(enum.IntEnum):
    """Why the minimiser stopped (optimistix-style result codes)."""

    successful = 0
    max_steps_reached = 1
    line_search_failed = 2
    nonfinite = 3

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    RESULTS.successful: "converged: Newton decrement below tolerance",
    RESULTS.max_steps_reached: "did not converge: maximum number of Newton steps reached",
    RESULTS.line_search_failed: "did not converge: the line search found no decrease",
    RESULTS.nonfinite: "did not converge: the objective is not finite at the starting values",
}


#: Newton decrement of the deviance above which a fit is not called converged: below it the log likelihood
#: is within 5e-7 of the local maximum. (A raw gradient threshold would misjudge coordinates of very
#: different scale.)
DECREMENT_TOL = 1e-6


#: An even coordinate (see :func:`minimise`) is stepped in its square only above this multiple of max(|x|, 1).
EVEN_FLOOR = 1e-6


def converged(result: Array, decrement: Array) -> Array:
    """The convergence verdict on a certified solution (NumPy or JAX, batched or not)."""
    return (result == RESULTS.successful) & (decrement <= DECREMENT_TOL)


class Solution(NamedTuple):
    """The minimiser's answer and its convergence certificate (a pytree; batched when vmapped)."""

    x: Array  # the minimiser
    value: Array  # objective at x
    grad: Array  # projected gradient at x (zero on active bounds)
    decrement: Array  # Newton decrement gᵀH⁻¹g on the free coordinates: twice the predicted remaining gain
    min_eig: Array  # smallest eigenvalue of the Hessian on the free coordinates
    free: Array  # bool mask of coordinates not held at a bound
    steps: Array  # Newton steps taken
    result: Array  # a RESULTS code


class _State(NamedTuple):
    x: Array
    f: Array
    steps: Array
    result: Array
    done: Array
    final: Array  # x is where the loop ends; the next iteration only certifies it (and may snap it)
    snapped: Array  # x has been snapped to its bounds once
    grad: Array  # the certificate at x, filled in by the iteration that stops (see Solution)
    decrement: Array
    min_eig: Array
    free: Array


def _free_mask(x: Array, g: Array, H: Array, lower: Array, eps_bar: float) -> Array:
    """Bertsekas' ε-active set: near the bound and pushed outward means held.

    ε = min(ε̄, ‖x − P(x − D g)‖) with D the inverse |diagonal| of H. A generous ε̄ lets a coordinate heading
    for its bound be recognised early and snapped there by the projected (diagonally scaled gradient) step,
    instead of creeping toward it by Newton steps; ε shrinks to 0 as the iterate becomes stationary.
    """
    scaled = g / jnp.maximum(jnp.abs(jnp.diagonal(H)), 1e-12)
    eps = jnp.minimum(eps_bar, jnp.linalg.norm(x - jnp.maximum(x - scaled, lower)))
    return ~((x - lower <= eps) & (g > 0))


def _free_eigh(H: Array, free: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of H restricted to the free coordinates (held ones get a large eigenvalue).

    Non-finite entries are zeroed first: LAPACK's eigensolver can loop forever on a NaN, and in a batch
    (vmap) a replicate that has already stopped still evaluates this at its frozen point.
    """
    H = jnp.where(jnp.isfinite(H), H, 0.0)
    big = jnp.max(jnp.abs(H)) + 1.0
    both = free[:, None] & free[None, :]
    return jnp.linalg.eigh(jnp.where(both, H, 0.0) + jnp.diag(jnp.where(free, 0.0, big)))


def _step_direction(x: Array, g: Array, H: Array, free: Array, lower: Array) -> tuple[Array, Array, Array, Array]:
    """(Newton direction, Newton decrement (with the held coordinates' projected steps), smallest free
    eigenvalue, negative-curvature direction).

    The Newton step on the free coordinates uses |eigenvalues| (floored), so it is a descent direction even
    where H is indefinite. Where that step is negligible but the free Hessian still has negative curvature
    (a saddle: e.g. a zero diagonal of Λ, where the deviance is even in its sign and the gradient vanishes),
    the step follows the most negative eigenvector instead, oriented into the feasible region.
    """
    w, V = _free_eigh(H, free)
    gf = jnp.where(free, g, 0.0)
    floor = 1e-10 * (jnp.max(jnp.abs(H)) + 1.0)
    d = -V @ ((V.T @ gf) / jnp.maximum(jnp.abs(w), floor))
    d = jnp.where(free, d, -g / jnp.maximum(jnp.abs(jnp.diagonal(H)), floor))
    # The held coordinates' projected (scaled gradient) steps count too: one held within ε of its bound but not on
    # it still has that step to take. Without it the decrement of the free coordinates alone read as convergence,
    # and a random-intercept fit whose EM start lay within ε of the boundary stopped there, 1.3 below the optimum.
    decrement = -jnp.dot(gf, d) - jnp.sum(jnp.where(free, 0.0, g * (jnp.maximum(x + d, lower) - x)))
    v = V[:, 0]
    # Into the feasible region when v moves a coordinate that is at its bound (a zero Λ diagonal, where the
    # deviance is even and gᵀv is rounding noise: following its sign sent the step out of bounds, to be
    # projected back onto the saddle), else downhill.
    into = jnp.sum(jnp.where(x - lower <= 1e-12, v, 0.0))
    downhill = -jnp.sign(jnp.dot(g, v))
    sign = jnp.where(jnp.abs(into) > 1e-8, jnp.sign(into), jnp.where(downhill != 0, downhill, 1.0))
    escape = sign * v * jnp.maximum(1.0, jnp.linalg.norm(x))
    return d, decrement, w[0], escape


def minimise(
    fn: Callable[[Array], Array],
    x0: Array,
    lower: Array,
    *,
    max_steps: int = 200,
    rtol: float = 1e-18,
    atol: float = 1e-13,
    eps_bar: float = 1e-2,
    even: Array | None = None,
    snap: float | None = None,
) -> Solution:
    """Minimise a smooth scalar ``fn`` subject to ``x >= lower`` (use -inf for unbounded coordinates).

    Stops when the Newton decrement gᵀH⁻¹g (the predicted decrease, twice) falls below
    ``atol + rtol·|f|``: at that point the objective is within that amount of the local minimum, and the
    minimiser is accurate to about sqrt(decrement / smallest eigenvalue). The defaults sit near the rounding
    floor of a float64 deviance, so that θ, and β̂(θ) with it, are pinned to about 1e-7 even along a flat
    direction (smallest eigenvalue ~0.5 on the HSB three-effect model); where rounding keeps the decrement
    above that, the fit still ends successfully once no step can decrease ``fn`` (see ``stuck`` below).

    ``even`` marks coordinates in which ``fn`` is even (f(…, x_k, …) = f(…, −x_k, …)) and bounded at 0.
    There the steps are Newton steps in y_k = x_k², where f is smooth and typically linear-plus-quadratic
    near the bound; in x_k it is flat to second order at 0, and Newton only creeps toward a boundary optimum
    (each step shrinking x_k by about a third). The derivatives in y come from those in x by the chain rule.

    ``snap``: where the loop ends, bounded coordinates within ``snap · max(|x|, 1)`` of their bound are set
    to it (an exactly singular fit) if ``fn`` is no worse there beyond rounding, and the certificate is
    taken at the snapped point.

    The returned certificate is computed at the returned x by the loop itself: the loop's one evaluation of
    the Hessian serves both the steps and the certificate (an iteration that ends the loop with a step, or
    snaps x, is followed by one that only certifies). XLA compiles each call site of the Hessian separately,
    and it is the largest part of a fit's program: with one site instead of three (a certificate after the
    loop and another after snapping), the HSB random-slope fit compiles in about 15% less time.
    """
    if jnp.shape(x0)[-1] == 0:  # nothing to choose (a linear model): the optimum is the start, certified
        zero = jnp.zeros((), x0.dtype)
        return Solution(x=x0, value=fn(x0), grad=x0, decrement=zero, min_eig=jnp.full((), jnp.inf, x0.dtype),
                        free=jnp.zeros(jnp.shape(x0), bool), steps=jnp.zeros((), jnp.int32),
                        result=jnp.asarray(RESULTS.successful, jnp.int32))
    even = jnp.zeros(jnp.shape(x0), bool) if even is None else jnp.asarray(even)
    def grad_twice(x: Array) -> tuple[Array, Array]:
        g = jax.grad(fn)(x)
        return g, g

    derivatives = jax.jacfwd(grad_twice, has_aux=True)  # (H, g) from one trace

    x0 = jnp.maximum(jnp.asarray(x0, jnp.float64), lower)
    f0 = fn(x0)
    bad0 = ~jnp.isfinite(f0)
    false, nan = jnp.asarray(False), jnp.asarray(jnp.nan)
    init = _State(x0, f0, jnp.asarray(0), jnp.where(bad0, RESULTS.nonfinite, RESULTS.successful), bad0, false,
                  false, jnp.full_like(x0, jnp.nan), nan, nan, jnp.ones(jnp.shape(x0), bool))

    def cond(s: _State) -> Array:
        return ~s.done

    def body(s: _State) -> _State:
        H, g = derivatives(s.x)
        free_x = _free_mask(s.x, g, H, lower, 0.0)  # the certificate at x, in x's coordinates
        _, decrement_x, min_eig_x, _ = _step_direction(s.x, g, H, free_x, lower)
        # Work in y: y_k = x_k² on the even coordinates away from 0, y_k = x_k elsewhere. "Away" is beyond
        # EVEN_FLOOR (relative): y_k's curvature is the difference of two terms of order f''/x_k², whose rounding
        # error (1e-16 f''/x_k²) at x_k = 1e-18 was 1e19; with the eigenvalue floor relative to the largest, that
        # zeroed the step in every other coordinate and the loop stopped short (a crossed model's bootstrap
        # refits, 0.0003 below the maximum). Below the floor the step is in x_k, where fn is even and flat, and
        # the end-of-loop snap sets it to 0.
        scale_x = jnp.maximum(jnp.max(jnp.abs(s.x)), 1.0)
        sq = even & (s.x > EVEN_FLOOR * scale_x)
        dxdy = jnp.where(sq, 0.5 / jnp.where(sq, s.x, 1.0), 1.0)
        y = jnp.where(sq, s.x**2, s.x)
        gy = dxdy * g
        Hy = dxdy[:, None] * H * dxdy[None, :] - jnp.diag(jnp.where(sq, 2.0 * dxdy**3 * g, 0.0))
        to_x = lambda yv: jnp.where(sq, jnp.sqrt(jnp.maximum(yv, 0.0)), yv)  # noqa: E731
        free = _free_mask(y, gy, Hy, lower, eps_bar)
        newton, decrement, min_eig, escape = _step_direction(y, gy, Hy, free, lower)
        tol = atol + rtol * jnp.abs(s.f)
        saddle = min_eig < -1e-8 * (jnp.max(jnp.abs(Hy)) + 1.0)
        converged = (decrement <= tol) & ~saddle
        # Within 1e-6 of a stationary point the Newton step can gain almost nothing: at a saddle, leave along
        # the negative curvature (waiting for the decrement to reach tol there let rounding decide, and a
        # replicate in a batch could stall at the saddle); near a minimum, the objective's rounding error
        # swamps the decrease a step can make, so the full Newton step is taken on the strength of its
        # quadratic convergence.
        near = decrement <= 1e-6
        d = jnp.where(near & saddle, escape, newton)
        local = near & ~saddle
        no_step = converged | s.final

        def armijo_cond(c: tuple[Array, Array, Array, Array]) -> Array:
            _, xn, fn_, k = c
            ok = (fn_ < s.f + 1e-4 * jnp.minimum(jnp.dot(g, xn - s.x), 0.0)) | (local & (k == 0) & jnp.isfinite(fn_))
            return ~ok & (k < 60) & ~no_step

        def armijo_body(c: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
            a, _, _, k = c
            a = 0.5 * a
            xn = to_x(jnp.maximum(y + a * d, lower))
            return a, xn, fn(xn), k + 1

        x1 = to_x(jnp.maximum(y + d, lower))
        # Boundary optima are often degenerate (the deviance is quartic in a Λ diagonal heading for 0, so
        # Newton only shrinks it by a third per step): also try the step with those coordinates on the bound.
        heading = jnp.isfinite(lower) & (d < 0)
        x_snap = jnp.where(heading, lower, x1)
        # Where the loop stops, x with the coordinates near their bound snapped to it (see ``snap``). No step is
        # taken there, so it takes x_snap's place: one vmapped evaluation at two trial points, as each call
        # site of fn is compiled separately.
        x_near = s.x if snap is None else jnp.where(jnp.isfinite(lower) & (s.x - lower < snap * scale_x), lower, s.x)
        f1, f_alt = jax.vmap(fn)(jnp.stack([x1, jnp.where(no_step, x_near, x_snap)]))
        f_snap = jnp.where(jnp.any(heading), f_alt, jnp.inf)
        snap_step = (f_snap < f1) | (f_snap < s.f + 1e-4 * jnp.minimum(jnp.dot(g, x_snap - s.x), 0.0))
        x1, f1 = jnp.where(snap_step, x_snap, x1), jnp.where(snap_step, f_snap, f1)
        _, xn, fn_, k = jax.lax.while_loop(armijo_cond, armijo_body, (jnp.asarray(1.0), x1, f1, 0))
        stuck = ~no_step & ((k >= 60) | ~jnp.isfinite(fn_))
        # At the limit of floating-point resolution a tiny decrement with no decrease is convergence.
        # Newton converges quadratically: after a full step from a decrement this small the next one is far
        # below tol, so the loop ends after it (the next iteration only certifies).
        finishing = (decrement <= 1e3 * tol) & ~saddle & ~stuck
        out_of_steps = s.steps + 1 >= max_steps
        ends = converged | stuck | finishing | out_of_steps
        result = jnp.where(
            converged | finishing | (stuck & (decrement <= 1e3 * tol) & ~saddle),
            RESULTS.successful,
            jnp.where(stuck, RESULTS.line_search_failed,
                      jnp.where(ends, RESULTS.max_steps_reached, RESULTS.successful)),
        )
        take = ~(no_step | stuck)  # else x stays: the certificate just computed is the answer's
        snapped = no_step & ~s.snapped & jnp.any(x_near != s.x) & (f_alt <= s.f + 1e-12 * jnp.abs(s.f))
        retry = stuck & ~s.snapped & (snap is not None)  # to try snapping, in a certifying iteration
        pick = lambda near, new, old: jnp.where(snapped, near, jnp.where(take, new, old))  # noqa: E731
        return _State(
            x=pick(x_near, xn, s.x),
            f=pick(f_alt, fn_, s.f),
            steps=s.steps + take.astype(s.steps.dtype),
            result=jnp.where(s.final, s.result, result),
            done=~take & ~snapped & ~retry,
            final=(take & ends) | snapped | retry,
            snapped=s.snapped | snapped,
            grad=jnp.where(free_x, g, 0.0), decrement=decrement_x, min_eig=min_eig_x, free=free_x,
        )

    s = jax.lax.while_loop(cond, body, init)
    return Solution(x=s.x, value=s.f, grad=s.grad, decrement=s.decrement, min_eig=s.min_eig, free=s.free,
                    steps=s.steps, result=s.result)
