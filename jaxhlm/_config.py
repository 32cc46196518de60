"""Process-wide JAX settings that jaxhlm needs: float64, a persistent compilation cache, XLA:CPU's faster-compiling
code generator, and a bound on the memory mappings that compiled programs hold.

Float64 is not optional: the profiled deviance of a 7,000-row model is ~5e4 and the log likelihood must be
right to 1e-6, which float32 cannot hold. The compilation cache turns the 1-3 s trace-and-compile of each
model shape into a disk read in every later process. Set ``JAXHLM_NO_CACHE=1`` to leave JAX's cache alone,
or ``JAXHLM_CACHE_DIR`` to move it (default ``~/.cache/jaxhlm/xla``). A cache directory the user configured
for JAX already is never overridden.

Every compiled XLA:CPU program keeps its machine code in about 20 memory mappings for as long as JAX caches it,
and JAX caches every program a process has compiled. Linux refuses mappings past ``vm.max_map_count`` (65,530
by default) and XLA does not survive the refusal: this project's test suite, run in one process, crashed with a
segmentation fault at the limit (64,627 mappings logged shortly before). jaxhlm counts compilations and, at its entry points
(:func:`relieve_map_pressure`), drops JAX's in-memory caches once the process holds half the limit; programs
then recompile, or load from the persistent cache, when next called.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

# XLA's C++ runtime logs for every program it loads from the compilation cache that jaxhlm turns on: a warning
# ("Assume version compatibility…") everywhere, and on many x86 CPUs (AMD Zen 4, Intel parts with the gather
# mitigation) two lines at error level per program claiming the cached code targets features the host lacks.
# Those features are LLVM tuning preferences (prefer-no-gather, prefer-no-scatter), not instructions, and the
# program loads and runs correctly; one fit printed some 70 such lines. Level 3 keeps XLA's C++ log to fatal
# messages; failures that matter still reach Python as exceptions. Set before jax is imported, and never over a
# level the user chose.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _loop_emitters() -> None:
    """Select XLA:CPU's loop emitters. With its fusion emitters, the default code generator, a first call of
    jaxhlm's programs (Newton iterations over autodiff Hessians) took 1.2-1.4 times as long, 1.3-2 times at the test
    suite's backend optimisation level 0, and the programs ran no faster (experiments/bench_compile.py). The flag changes only
    XLA:CPU's code generation and must be set before the backend starts. XLA aborts the process on a flag it does
    not know, so it is set only for the jaxlib releases checked to have it (0.7 to 0.9); a choice of the user's in
    XLA_FLAGS stands, and JAXHLM_XLA_DEFAULTS=0 leaves XLA_FLAGS alone."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXHLM_XLA_DEFAULTS", "").strip() == "0" or "xla_cpu_use_fusion_emitters" in flags:
        return
    try:
        release = tuple(int(part) for part in metadata.version("jaxlib").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return
    if (0, 7) <= release < (0, 10):
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_use_fusion_emitters=false").strip()


_loop_emitters()

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


#: JAX's duration event for each new executable in memory, compiled or loaded from the disk cache.
_PROGRAM_EVENT = "/jax/core/compile/backend_compile_duration"
#: Programs between counts of the mappings (reading /proc/self/maps costs ~1.4 ms per 1,000 of them); 50
#: programs add ~1,000 mappings, far below the half of the limit kept free.
CHECK_EVERY = 50


def _max_map_count() -> int | None:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None  # not Linux: no such limit to guard


_map_limit = _max_map_count()
_programs_since_count = 0


def _count_program(event: str, duration: float, **_: Any) -> None:
    global _programs_since_count
    if event == _PROGRAM_EVENT:
        _programs_since_count += 1


if _map_limit is not None:
    jax.monitoring.register_event_duration_secs_listener(_count_program)


def relieve_map_pressure() -> bool:
    """Drop JAX's in-memory compiled programs if this process holds half the kernel's memory-map limit.

    The listener above only counts: clearing JAX's caches from inside a compilation is not safe, so jaxhlm
    calls this where none is in progress (before it runs a program). Returns True when it cleared them.
    """
    global _programs_since_count
    if _map_limit is None or _programs_since_count < CHECK_EVERY:
        return False
    _programs_since_count = 0
    try:
        with open("/proc/self/maps", "rb") as fh:
            in_use = fh.read().count(b"\n")
    except OSError:
        return False  # a sandbox that hides /proc: nothing to measure
    if in_use < _map_limit // 2:
        return False
    jax.clear_caches()
    logging.getLogger("jaxhlm").info(
        "%d of the kernel's %d memory mappings in use (mostly compiled programs): cleared JAX's in-memory "
        "compilation caches", in_use, _map_limit)
    return True
