"""A dense likelihood and its central differences, the check the variance parameters' information and Satterthwaite's
degrees of freedom are held to (tests/test_residuals_by.py, tests/test_ar1.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def differences(dense: Callable[[np.ndarray], tuple[float, np.ndarray]], phi: np.ndarray, h: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray]:
    """(H, dC) at φ for ``dense(φ) = (log likelihood, Cov(β̂))``: H the central second differences of the log
    likelihood, dC[k, a] the central first difference of Var(β̂ₖ) along φₐ; each Richardson-extrapolated from steps
    h and h/2, (4 D(h/2) − D(h)) / 3, which leaves an error of order h⁴. One step cannot serve: where the likelihood
    is nearly flat in a coordinate (a small variance's log sd), a step small enough for the h² error leaves rounding
    noise of ε|ℓ|/h² that reached 1.4e-4 of Cov(φ̂) on one machine and not on another."""
    def once(step: float) -> tuple[np.ndarray, np.ndarray]:
        k = len(phi)
        H, dC = np.zeros((k, k)), np.zeros((len(dense(phi)[1]), k))
        for a in range(k):
            da = step * np.eye(k)[a]
            dC[:, a] = np.diag(dense(phi + da)[1] - dense(phi - da)[1]) / (2 * step)
            for b in range(k):
                db = step * np.eye(k)[b]
                H[a, b] = (dense(phi + da + db)[0] - dense(phi + da - db)[0]
                           - dense(phi - da + db)[0] + dense(phi - da - db)[0]) / (4 * step * step)
        return H, dC

    (H1, C1), (H2, C2) = once(h), once(h / 2)
    return (4 * H2 - H1) / 3, (4 * C2 - C1) / 3


def gls_loglik(X: np.ndarray, y: np.ndarray, groups: list[np.ndarray], V: list[np.ndarray]
               ) -> tuple[float, np.ndarray]:
    """The ML log likelihood with β by GLS, and (XᵀV⁻¹X)⁻¹, for the rows ``groups`` (index arrays) each with its
    marginal covariance in ``V``: written out, rows and all (no sufficient statistics, no autodiff)."""
    inverses = [np.linalg.inv(v) for v in V]
    A = sum(X[i].T @ Vi @ X[i] for i, Vi in zip(groups, inverses))
    beta = np.linalg.solve(A, sum(X[i].T @ Vi @ y[i] for i, Vi in zip(groups, inverses)))
    e = y - X @ beta
    quad = sum(e[i] @ Vi @ e[i] for i, Vi in zip(groups, inverses))
    logdet = sum(np.linalg.slogdet(v)[1] for v in V)
    return -0.5 * (len(y) * np.log(2 * np.pi) + logdet + quad), np.linalg.inv(A)


def ols_loglik(X: np.ndarray, y: np.ndarray, reml: bool = False) -> float:
    """The linear regression's log likelihood (ML: σ̂² = RSS/n) or REML criterion (σ̃² = RSS/(n − p), with
    −½ log|XᵀX|), written out: the model Stata's "LR test vs. linear model" compares a mixed model with."""
    n, p = X.shape
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    rss = float(((y - X @ beta) ** 2).sum())
    if not reml:
        return -n / 2 * (np.log(2 * np.pi * rss / n) + 1)
    return -(n - p) / 2 * (np.log(2 * np.pi * rss / (n - p)) + 1) - 0.5 * np.linalg.slogdet(X.T @ X)[1]


def lr_vs_ols(m) -> float:
    """A fitted model's LR statistic against the linear regression on its own rows (:func:`ols_loglik`)."""
    rows = m.design.rows()
    return 2 * (m.llf - ols_loglik(rows.X, rows.y, m.reml))
