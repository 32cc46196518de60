"""A dense likelihood and its central differences, the check the variance parameters' information and Satterthwaite's
degrees of freedom are held to (tests/test_residuals_by.py, tests/test_ar1.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def differences(dense: Callable[[np.ndarray], tuple[float, np.ndarray]], phi: np.ndarray, h: float = 1e-4
                ) -> tuple[np.ndarray, np.ndarray]:
    """(H, dC) at φ for ``dense(φ) = (log likelihood, Cov(β̂))``: H the central second differences of the log
    likelihood, dC[k, a] the central first difference of Var(β̂ₖ) along φₐ."""
    k = len(phi)
    H, dC = np.zeros((k, k)), np.zeros((len(dense(phi)[1]), k))
    for a in range(k):
        da = h * np.eye(k)[a]
        dC[:, a] = np.diag(dense(phi + da)[1] - dense(phi - da)[1]) / (2 * h)
        for b in range(k):
            db = h * np.eye(k)[b]
            H[a, b] = (dense(phi + da + db)[0] - dense(phi + da - db)[0]
                       - dense(phi - da + db)[0] + dense(phi - da - db)[0]) / (4 * h * h)
    return H, dC


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
