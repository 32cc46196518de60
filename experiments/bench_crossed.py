"""Crossed random effects: jaxhlm and lme4 side by side in one run on seeded synthetic data.

Subjects responding to items: S subjects × I items, each subject seeing a random 80% of the items (or, for a
sparse crossing such as users rating items, a given number of them), a random intercept and x slope by subject
(unstructured) and a random intercept by item, 3 fixed effects; fitted by ML.
lme4 (``lmer(y ~ x + cond + (1 + x | subj) + (1 | item))``) reads the same numbers from binary files and times
``lmer`` alone; jaxhlm times its first fit in this process and a repeat with its design cache cleared ("warm":
statistics rebuilt from the rows, no compilation), as experiments/bench_nested.py does (whose runners this
uses). The ratios use the warm fit; the log likelihoods are compared.

Run with ``make bench`` or ``python experiments/bench_crossed.py [--sizes 100x50 1000x200 2000x500 20000x1000x20]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_nested import COLUMNS, parser, side_by_side  # noqa: E402

FORMULA = "y ~ x + cond + (1 + x | subj) + (1 | item)"


def generate(n_subj: int, n_item: int, per_subject: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Each subject's responses to a random 80% of the items, or to ``per_subject`` of them (a sparse
    crossing, as users rating items), reproducible from the seed."""
    rng = np.random.default_rng(seed)
    if per_subject is None:
        subj, item = np.divmod(np.flatnonzero(rng.random(n_subj * n_item) < 0.8), n_item)
    else:
        subj = np.repeat(np.arange(n_subj), per_subject)
        item = np.argsort(rng.random((n_subj, n_item)), axis=1)[:, :per_subject].ravel()
    n = len(subj)
    u = rng.multivariate_normal([0, 0], [[1.0, 0.2], [0.2, 0.16]], n_subj)
    cond = rng.integers(0, 2, n_item)
    x = rng.normal(size=n)
    y = 5 + 0.8 * x + 0.5 * cond[item] + u[subj, 0] + u[subj, 1] * x + rng.normal(0, 0.7, n_item)[item] \
        + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "cond": cond[item].astype(float), "subj": subj, "item": item})


def main() -> None:
    args = parser(["100x50", "1000x200", "2000x500", "20000x1000x20"],
                  help="subjects x items, or subjects x items x items per subject (a sparse crossing)").parse_args()
    print(f"Crossed ML fits, {FORMULA}; {os.cpu_count()} CPUs")
    print(f"{'N':>10} {'subjects':>8} {'items':>6} {'each':>5} {COLUMNS}")
    for size in args.sizes:
        n_subj, n_item, *per = map(int, size.split("x"))
        frame = generate(n_subj, n_item, *per)
        each = f"{per[0]:>5}" if per else f"{'80%':>5}"
        print(f"{len(frame):>10,} {n_subj:>8,} {n_item:>6,} {each} {side_by_side(frame, FORMULA, args)[1]}")


if __name__ == "__main__":
    main()
