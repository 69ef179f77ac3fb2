"""Test set-up: 8 fake CPU devices (for sharding tests) and exact f32 matmuls.

XLA_FLAGS must be set before jax is first imported, so this runs at collection.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The end-to-end tests start dozens of `grow_jax.main` subprocesses on the same tiny shapes;
# compiling them is most of their time. A persistent XLA cache shared by those subprocesses
# (set after jax's import, so not used by this process) cuts a warm CLI run ~3.5x; cached
# executables are the same programs, so results are unchanged (metrics rows equal, checked
# cold vs warm on the trainer e2e config). Entries are keyed by program, flags and versions.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"grow_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # sys.modules[name] is None: import blocked
        return False


def pytest_collection_modifyitems(config, items):
    """`needs_torch` tests skip (one by one, not their whole module) without torch."""
    import pytest

    if _importable("torch") and _importable("transformers"):
        return
    skip = pytest.mark.skip(reason="needs torch + transformers (pip install -e '.[test]')")
    for item in items:
        if "needs_torch" in item.keywords:
            item.add_marker(skip)
