"""Test set-up: 8 fake CPU devices (for sharding tests) and exact f32 matmuls.

XLA_FLAGS must be set before jax is first imported, so this runs at collection.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


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
