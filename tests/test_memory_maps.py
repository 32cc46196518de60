"""The bound on memory mappings held by compiled programs (jaxhlm._config): JAX's compilations are counted,
and jaxhlm's entry points drop JAX's in-memory caches once the process holds half the kernel's limit.

Without it, one process that ran this whole suite crashed (segmentation fault, /proc/self/maps at the
65,530-mapping limit after ~3,000 compiled programs); the suite now runs in one pytest process."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhlm
from jaxhlm import _config

pytestmark = pytest.mark.skipif(_config._map_limit is None, reason="no vm.max_map_count here (not Linux)")


def _maps() -> int:
    with open("/proc/self/maps", "rb") as fh:
        return fh.read().count(b"\n")


@pytest.fixture
def compiled():
    """A jitted function with one program in JAX's cache."""
    f = jax.jit(lambda x: jnp.cos(x) * 1.75 + 0.5)
    f(np.ones(13))
    assert f._cache_size() == 1
    return f


def test_each_compilation_is_counted(monkeypatch):
    monkeypatch.setattr(_config, "_programs_since_count", 0)
    f = jax.jit(lambda x: jnp.sin(x) * 3.25)
    for n in range(3):
        f(np.ones(n + 101))  # NumPy inputs: no eager op compiles beside f's three shapes
    assert _config._programs_since_count == 3


def test_cleared_only_past_half_the_limit(monkeypatch, compiled):
    monkeypatch.setattr(_config, "_programs_since_count", _config.CHECK_EVERY)
    monkeypatch.setattr(_config, "_map_limit", 4 * _maps())  # a quarter in use: left alone
    assert not _config.relieve_map_pressure()
    assert compiled._cache_size() == 1 and _config._programs_since_count == 0

    monkeypatch.setattr(_config, "_map_limit", 2 * _maps() - 2)
    monkeypatch.setattr(_config, "_programs_since_count", _config.CHECK_EVERY - 1)
    assert not _config.relieve_map_pressure()  # not counted yet: too few programs since the last count
    assert compiled._cache_size() == 1

    monkeypatch.setattr(_config, "_programs_since_count", _config.CHECK_EVERY)
    before = _maps()
    assert _config.relieve_map_pressure()
    assert compiled._cache_size() == 0 and _maps() < before
    np.testing.assert_allclose(compiled(np.ones(13)), np.cos(1.0) * 1.75 + 0.5)  # recompiled on demand


@pytest.mark.parametrize("entry", ["fit", "refit_batch", "influence"])
def test_entry_points_relieve_and_still_agree(monkeypatch, hsb, compiled, entry):
    model = jaxhlm.mixed("mathach ses i.sector || id:", hsb)
    run = {
        "fit": lambda: jaxhlm.mixed("mathach ses i.sector || id:", hsb).llf,
        "refit_batch": lambda: jaxhlm.refit_batch(model, np.asarray(model.design.rows().y),
                                                  progress=False).llf[0],
        "influence": lambda: model.influence().cooks_distance.to_numpy(),
    }[entry]
    expected = run()
    monkeypatch.setattr(_config, "_map_limit", 2)
    monkeypatch.setattr(_config, "_programs_since_count", _config.CHECK_EVERY)
    np.testing.assert_allclose(run(), expected, rtol=1e-10)
    assert compiled._cache_size() == 0  # the entry point cleared JAX's caches before it ran
    if entry != "influence":
        np.testing.assert_allclose(expected, model.llf, rtol=1e-10)
