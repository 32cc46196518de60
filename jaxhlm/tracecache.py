"""A persistent cache of traced and lowered programs, so that a fresh process skips JAX's tracing.

The XLA compilation cache (see :mod:`jaxhlm._config`) keeps compiled code on disk, but every new process
still traces the Python functions and lowers them to StableHLO before it can look the code up: about a
second per model shape for the fit and its inference. This module stores the lowered program itself
(``jax.export``) per function, static arguments, argument shapes and dtypes, backend, JAX version and
jaxhlm source, and replays it in later processes. Within a process each program is jitted once and reused.

It shares the compilation cache's directory and switch (``JAXHLM_CACHE_DIR``, ``JAXHLM_NO_CACHE=1``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import export

from . import _config
from .estimate import Fit, KRParts, REInformation, ResidualFit
from .optimize import Solution
from .residual import SerialRows
from .stats import CrossedStats, GroupedData, GroupStats, NestedStats


def register(*types: type) -> None:
    """Let programs whose arguments or results hold these NamedTuples be stored."""
    for t in types:
        export.register_namedtuple_serialization(t, serialized_name=f"jaxhlm.{t.__name__}")


register(Fit, KRParts, REInformation, ResidualFit, Solution, GroupedData, GroupStats, NestedStats, CrossedStats,
         SerialRows)

_PROGRAMS: dict[str, Callable[..., Any]] = {}


@lru_cache(maxsize=1)
def _source_digest() -> str:
    h = hashlib.sha256(jax.__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def _directory() -> Path | None:
    path = _config.cache_dir()
    return None if path is None else path.with_name(path.name + "-programs")


def call(fn: Callable[..., Any], static: dict[str, Any], *args: Any) -> Any:
    """``fn(*args, **static)`` through a jitted program that is traced at most once per machine."""
    _config.relieve_map_pressure()
    leaves, treedef = jax.tree.flatten(args)
    signature = repr((fn.__module__, fn.__qualname__, sorted(static.items()), str(treedef),
                      [(tuple(x.shape), str(x.dtype)) for x in leaves], jax.default_backend()))
    key = hashlib.sha256((signature + _source_digest()).encode()).hexdigest()[:40]
    program = _PROGRAMS.get(key)
    if program is None:
        program = _PROGRAMS[key] = _load_or_export(key, fn, static, args)
    return program(*args)


@lru_cache(maxsize=1)
def _load_lapack() -> None:
    """Make jaxlib load its CPU LAPACK kernels, which it otherwise does only while lowering a linalg op.

    A replayed program calls those kernels without lowering anything; in jaxlib 0.9 that call found no
    kernel loaded and crashed the process (segmentation fault). Lowering (not compiling) one tiny
    eigendecomposition loads them.
    """
    jax.jit(jnp.linalg.eigh).lower(jnp.eye(1))


def _load_or_export(key: str, fn: Callable[..., Any], static: dict[str, Any], args: tuple) -> Callable[..., Any]:
    directory = _directory()
    target = jax.jit(partial(fn, **static))
    if directory is None:
        return target
    path = directory / f"{key}.jaxexport"
    if path.is_file():
        try:
            exported = export.deserialize(bytearray(path.read_bytes()))
            _load_lapack()
            return jax.jit(exported.call)
        except Exception:  # a corrupt or incompatible entry is rebuilt below  # noqa: BLE001
            pass
    exported = export.export(target)(*args)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(exported.serialize())
        os.replace(tmp, path)
    except (OSError, ImportError):
        pass  # an unwritable cache (or no flatbuffers) costs only speed
    return jax.jit(exported.call)
