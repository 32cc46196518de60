"""Process-wide JAX settings that jaxhlm needs: float64 and a persistent compilation cache.

Float64 is not optional: the profiled deviance of a 7,000-row model is ~5e4 and the log likelihood must be
right to 1e-6, which float32 cannot hold. The compilation cache turns the 1-3 s trace-and-compile of each
model shape into a disk read in every later process. Set ``JAXHLM_NO_CACHE=1`` to leave JAX's cache alone,
or ``JAXHLM_CACHE_DIR`` to move it (default ``~/.cache/jaxhlm/xla``). A cache directory the user configured
for JAX already is never overridden.
"""

from __future__ import annotations

import os
from pathlib import Path

# XLA's C++ runtime logs a warning ("Assume version compatibility…") for every program it loads from the
# compilation cache that jaxhlm turns on; at level 2 only its errors reach stderr. Set before jax is imported,
# and never over a level the user chose.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


def _chosen_dir() -> Path | None:
    if os.environ.get("JAXHLM_NO_CACHE", "").strip() not in ("", "0"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return None
    root = os.environ.get("JAXHLM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "jaxhlm", "xla"
    )
    return Path(root)


def _enable_cache() -> Path | None:
    path = _chosen_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # read-only home: run uncached rather than fail
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


_CACHE_DIR = _enable_cache()


def cache_dir() -> Path | None:
    """The XLA compilation cache jaxhlm set up, or None when its caches are off."""
    return _CACHE_DIR
