"""Scale: statistics without padding, chunked input, shape buckets that share compiled programs, many groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxhlm
from jaxhlm import covariance, tracecache
from jaxhlm.deviance import profiled_deviance
from jaxhlm.errors import DataError
from jaxhlm.stats import Accumulator, GroupStats, group_stats, packed_products, pad_groups

STATA_MODEL = "mathach c.ses##c.sector c.ses##i.sized i.female##i.sized || id: ses, cov(unstr)"
FORMULA_MODEL = "mathach ~ ses*sector + female*C(sized) + (1 + ses | id)"


def _same_fit(a, b) -> None:
    assert a.llf == pytest.approx(b.llf, abs=1e-8)
    assert list(a.params.index) == list(b.params.index)
    np.testing.assert_allclose(a.params.to_numpy(), b.params.to_numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.bse.to_numpy(), b.bse.to_numpy(), rtol=1e-6)
    assert (a.nobs, a.ngroups, a.design.omitted, a.design.notes) == (b.nobs, b.ngroups, b.design.omitted,
                                                                     b.design.notes)


# ---- the accumulator ------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q=st.integers(1, 3), block=st.sampled_from([3, 7, 64]),
       split=st.integers(1, 4))
def test_accumulator_equals_padded_statistics(seed, q, block, split):
    """Blocks, chunks, groups in any order and columns that appear only in later chunks (zero before) all sum
    to the cross-products of the padded layout."""
    rng = np.random.default_rng(seed)
    n, m, p = 60, 7, 4
    g = rng.integers(0, m, n)
    g[:m] = np.arange(m)  # every group present
    X, Z, y = rng.normal(size=(n, p)), rng.normal(size=(n, q)), rng.normal(size=n)
    late = n // 2
    X[:late, -1] = 0.0  # the last column is "new" in the second half
    acc = Accumulator(q)
    acc.BLOCK = block
    bounds = np.linspace(0, n, split + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        cols = p - 1 if b <= late else p
        acc.add(X[a:b, :cols], Z[a:b], y[a:b], g[a:b])
    if acc.R.shape[1] < p:  # no chunk carried the late column: it is all zero
        acc.add(X[:0], Z[:0], y[:0], g[:0])
    got = acc.result()
    ref = group_stats(pad_groups(X, Z, y, g, m))
    np.testing.assert_allclose(got.ZtZ, ref.ZtZ, atol=1e-10)
    np.testing.assert_allclose(got.ZtX[:, :, :got.R.shape[1]], np.asarray(ref.ZtX)[:, :, :got.R.shape[1]],
                               atol=1e-10)
    np.testing.assert_allclose(got.Zty, ref.Zty, atol=1e-10)
    k = got.R.shape[1]
    np.testing.assert_allclose(got.R.T @ got.R, np.asarray(ref.XtX)[:k, :k], atol=1e-10)
    np.testing.assert_allclose(got.Xty, np.asarray(ref.Xty)[:k], atol=1e-10)
    assert got.yty == pytest.approx(float(ref.yty)) and got.n == n
    np.testing.assert_array_equal(got.counts, np.bincount(g, minlength=m))


def test_skewed_group_sizes_cost_memory_in_proportion_to_rows():
    """One group of 10⁵ rows beside 5×10⁴ groups of 2: padding would need 5×10⁴ × 10⁵ cells per column
    (tens of GB); building the statistics must stay within a small multiple of the data."""
    rng = np.random.default_rng(5)
    g = np.concatenate([np.zeros(100_000, np.int64), 1 + np.repeat(np.arange(50_000), 2)])
    x = rng.normal(size=len(g))
    b = rng.normal(size=50_001)
    frame = pd.DataFrame({"y": 1 + 0.5 * x + b[g] + rng.normal(size=len(g)), "x": x, "g": g})
    spec = jaxhlm.parse_formula("y ~ x + (1 | g)")
    tracemalloc.start()
    design = jaxhlm.design.build_design(spec, frame)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    data = frame.memory_usage().sum()
    assert peak < 6 * data, (peak, data)
    r = jaxhlm.fit("y ~ x + (1 | g)", frame)
    assert r.converged and r.ngroups == 50_001 and r.nobs == 200_000
    assert r.group_sizes == {"min": 2, "avg": pytest.approx(200_000 / 50_001), "max": 100_000}
    assert design.stats.n == 200_000


# ---- chunked input --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hsb_late_level(hsb):
    """HSB with the rows of the largest school size class last, so that chunks see that level late."""
    late = hsb["sized"] == hsb["sized"].max()
    return pd.concat([hsb[~late], hsb[late]], ignore_index=True)


def _chunks(frame: pd.DataFrame, size: int):
    return (frame.iloc[i:i + size] for i in range(0, len(frame), size))


def test_stata_syntax_in_chunks_equals_one_shot(hsb_late_level):
    ref = jaxhlm.mixed(STATA_MODEL, hsb_late_level)
    _same_fit(jaxhlm.mixed(STATA_MODEL, _chunks(hsb_late_level, 1000)), ref)
    frame = hsb_late_level.copy()
    frame.loc[::50, "ses"] = np.nan  # listwise deletion counted across chunks
    ref = jaxhlm.mixed(STATA_MODEL, frame)
    got = jaxhlm.mixed(STATA_MODEL, _chunks(frame, 777))
    _same_fit(got, ref)
    assert got.design.n_dropped == ref.design.n_dropped == int(frame["ses"].isna().sum())
    assert got.design.sample == ref.design.sample  # lrtest accepts a chunked and a one-shot fit as one sample


def test_formula_in_chunks_read_csv_dict_and_parquet_equal_one_shot(hsb, tmp_path, monkeypatch):
    ref = jaxhlm.fit(FORMULA_MODEL, hsb)
    path = tmp_path / "hsb.csv"
    hsb.to_csv(path, index=False)
    _same_fit(jaxhlm.fit(FORMULA_MODEL, pd.read_csv(path, chunksize=2000)), ref)
    _same_fit(jaxhlm.fit(FORMULA_MODEL, {c: hsb[c].to_numpy() for c in hsb.columns}), ref)
    pytest.importorskip("pyarrow")
    hsb.to_parquet(tmp_path / "hsb.parquet")
    monkeypatch.setattr(jaxhlm.design, "PARQUET_BATCH_ROWS", 1500)
    _same_fit(jaxhlm.fit(FORMULA_MODEL, str(tmp_path / "hsb.parquet")), ref)
    model = "mathach ses i.sector || id:"
    _same_fit(jaxhlm.mixed(model, tmp_path / "hsb.parquet"), jaxhlm.mixed(model, hsb))


def test_formula_chunks_that_cannot_be_encoded_alike_are_refused(hsb_late_level):
    with pytest.raises(DataError, match="level its encoding does not know.*first chunk"):
        jaxhlm.fit(FORMULA_MODEL, _chunks(hsb_late_level, 1000))
    with pytest.raises(DataError, match="center.*whole sample"):
        jaxhlm.fit("mathach ~ center(ses) + (1 | id)", _chunks(hsb_late_level, 1000))
    # A categorical dtype carries every level into every chunk: then chunks are fine.
    frame = hsb_late_level.assign(sized=pd.Categorical(hsb_late_level["sized"]))
    _same_fit(jaxhlm.fit(FORMULA_MODEL, _chunks(frame, 1000)), jaxhlm.fit(FORMULA_MODEL, frame))


def test_chunked_fits_say_what_they_cannot_do(hsb):
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", _chunks(hsb, 3000))
    with pytest.raises(DataError, match="read in chunks.*fit it from a DataFrame"):
        jaxhlm.simulate(r, 2)
    with pytest.raises(DataError, match="chunk 1 of the data is a list"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", iter([hsb, [1, 2]]))
    with pytest.raises(DataError, match="equal-length"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", {"mathach": np.ones(3), "ses": np.ones(2), "id": np.ones(3)})
    with pytest.raises(DataError, match="Parquet"):
        jaxhlm.fit("mathach ~ ses + (1 | id)", "no-such-file.parquet")
    with pytest.raises(DataError, match="no chunks"):
        jaxhlm.mixed("mathach ses || id:", iter([]))


def test_rows_rebuilt_for_batches_follow_the_data(hsb):
    other, frame = hsb.copy(), hsb.copy()
    jaxhlm.fit("mathach ~ ses + (1 | id)", other)
    r = jaxhlm.fit("mathach ~ ses + (1 | id)", frame)  # equal content: the design prepared for `other` is reused
    other.loc[0, "mathach"] += 1.0  # an edit of another frame is not this fit's business
    rows = r.design.rows()
    assert rows.X.shape == (len(hsb), 2) and np.array_equal(rows.y, hsb["mathach"].to_numpy())
    frame.loc[0, "mathach"] += 1.0
    with pytest.raises(DataError, match="data changed after the fit"):
        r.design.rows()


# ---- compile latency ------------------------------------------------------------------------------------
def test_models_in_one_shape_bucket_share_compiled_programs():
    """9 and 10 fixed effects fall in one bucket (10): the second model traces and compiles nothing new; 11
    falls in the next (12) and does."""
    rng = np.random.default_rng(0)
    n, m = 2_000, 40
    frame = pd.DataFrame(rng.normal(size=(n, 10)), columns=[f"x{i}" for i in range(1, 11)])
    frame["g"] = rng.integers(0, m, n)
    frame["y"] = frame["x1"] + rng.normal(size=m)[frame["g"]] + rng.normal(size=n)

    def model(k: int) -> str:
        return "y ~ " + " + ".join(f"x{i}" for i in range(1, k)) + " + (1 | g)"

    jaxhlm.fit(model(9), frame)
    programs = len(tracecache._PROGRAMS)
    r = jaxhlm.fit(model(10), frame)
    assert len(r.fe_params) == 10 and r.converged
    assert len(tracecache._PROGRAMS) == programs
    jaxhlm.fit(model(11), frame)
    assert len(tracecache._PROGRAMS) > programs


def test_compilation_cache_is_on_by_default_and_can_be_turned_off(tmp_path):
    script = "import jax, jaxhlm; print(jaxhlm._config.cache_dir(), jax.config.jax_compilation_cache_dir)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXHLM_")}
    on = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=dict(env, XDG_CACHE_HOME=str(tmp_path)), check=True)
    assert on.stdout.split() == [str(tmp_path / "jaxhlm" / "xla")] * 2
    off = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(env, XDG_CACHE_HOME=str(tmp_path), JAXHLM_NO_CACHE="1"), check=True)
    assert off.stdout.split() == ["None", "None"]


@pytest.mark.parametrize("flags, release, opt_out, expected", [
    ("", "0.9.2", "", "--xla_cpu_use_fusion_emitters=false"),
    ("--xla_backend_optimization_level=0", "0.7.0",
     "", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"),
    ("--xla_cpu_use_fusion_emitters=true", "0.9.2", "", "--xla_cpu_use_fusion_emitters=true"),  # the user's choice
    ("", "0.9.2", "0", ""),  # JAXHLM_XLA_DEFAULTS=0
    ("", "0.11.2", "", ""),  # a release not checked for the flag, which XLA would abort on if it lacked it
])
def test_loop_emitters_are_chosen_only_where_known(monkeypatch, flags, release, opt_out, expected):
    monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.setenv("JAXHLM_XLA_DEFAULTS", opt_out)
    monkeypatch.setattr(jaxhlm._config.metadata, "version", lambda name: release)
    jaxhlm._config._loop_emitters()
    assert os.environ["XLA_FLAGS"] == expected


# ---- many groups ----------------------------------------------------------------------------------------
def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        yield from (v.aval for v in eqn.outvars)
        for sub in jax.core.jaxprs_in_params(eqn.params):
            yield from _avals(sub)


def test_deviance_and_gradient_with_many_groups_stay_linear_in_groups():
    """With 10⁵ groups and a random intercept and slope, no intermediate of the deviance or its gradient has two
    axes as long as the number of groups, and none is larger than the per-group statistics."""
    m, q, p = 100_000, 2, 10
    T = jnp.asarray(covariance.templates(jaxhlm.parse_formula("y ~ x + (1 + x | g)").blocks))
    stats = GroupStats(*(jax.ShapeDtypeStruct(s, jnp.float64) for s in [
        (m, q, q), (m, q, p), (m, q * (q + 1) // 2, p * (p + 1) // 2), (m, q), (p, p), (p,), (), (), (), (m,)]))
    theta = jax.ShapeDtypeStruct((T.shape[0],), jnp.float64)
    closed = jax.make_jaxpr(jax.value_and_grad(lambda th, s: profiled_deviance(th, s, T)))(theta, stats)
    largest = m * (q * (q + 1) // 2) * (p * (p + 1) // 2)
    for aval in _avals(closed.jaxpr):
        shape = getattr(aval, "shape", ())
        assert sum(d >= m for d in shape) <= 1, shape
        assert int(np.prod(shape)) <= largest, shape


def test_cli_reads_csv_in_chunks_and_parquet(hsb, tmp_path, capsys):
    from jaxhlm.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    csv = tmp_path / "hsb.csv"
    hsb.to_csv(csv, index=False)
    model = "mathach ses i.sized || id: ses, cov(unstr)"
    code, whole, _ = run("mixed", model, "--data", str(csv), "--json")
    assert code == 0
    code, chunked, _ = run("mixed", model, "--data", str(csv), "--chunksize", "999", "--json")
    assert code == 0
    a, b = json.loads(whole), json.loads(chunked)
    assert b["llf"] == pytest.approx(a["llf"], abs=1e-8) and b["nobs"] == a["nobs"] == len(hsb)
    code, _, err = run("fit", "mathach ~ ses + (1 | id)", "--data", str(csv), "--chunksize", "0")
    assert code == 2 and "chunk size must be a positive" in err
    pytest.importorskip("pyarrow")
    hsb.to_parquet(tmp_path / "hsb.parquet")
    code, out, _ = run("mixed", model, "--data", str(tmp_path / "hsb.parquet"), "--json")
    assert code == 0 and json.loads(out)["llf"] == pytest.approx(a["llf"], abs=1e-8)
    # run and bootstrap read a Parquet file whole (their models need the rows)
    pd.testing.assert_frame_equal(jaxhlm.datasets.read(str(tmp_path / "hsb.parquet"), in_memory=True), hsb)


def test_single_fits_and_batches_get_the_same_deviance_with_or_without_packed_products(hsb):
    """Batched refits carry ZtX2 (one GEMM across a batch); single fits, and batches past ZX2_MAX_ENTRIES, leave it
    out and contract ZtX directly. Both give one deviance."""
    r = jaxhlm.mixed(STATA_MODEL, hsb)
    lean, packed = (jaxhlm.pipeline.design_stats(r.design, packed=b) for b in (False, True))
    assert lean.ZtX2.shape[-1] == 0 and packed.ZtX2.shape[-1] > 0
    T = jnp.asarray(covariance.templates(r.design.blocks))
    for theta in (r.theta, 0.5 * r.theta + 0.1):
        for reml in (False, True):
            a, b = (float(profiled_deviance(jnp.asarray(theta), s, T, reml)) for s in (lean, packed))
            assert a == pytest.approx(b, rel=1e-12)
    assert -0.5 * float(profiled_deviance(jnp.asarray(r.theta), packed, T)) == pytest.approx(r.llf, abs=1e-7)
    too_big = jax.eval_shape(lambda z: packed_products(z, True), jax.ShapeDtypeStruct((10**6, 2, 10), jnp.float64))
    assert too_big.shape == (10**6, 0, 0)
