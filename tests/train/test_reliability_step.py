"""Numerical faults in the train step: a non-finite loss or gradient skips the update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grow_jax import sharding
from .test_step import _batch, _fresh_state, _host, _learner, _samples


@pytest.fixture(scope="module")
def learner():
    return _learner(sharding.make_mesh(devices=jax.devices()[:1]))


def _nan(batch):
    return {**batch, "advantages": jnp.full_like(batch["advantages"], jnp.nan)}


def _stack(*batches):
    return {k: jnp.concatenate([b[k] for b in batches]) for k in batches[0]}


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(_host(tree))]


def test_nan_advantage_skips_the_update_and_is_counted(learner):
    good = _batch(_samples(8, seed=3))
    state = _fresh_state(learner)
    before = _bits(state)
    new, m = learner.step(state, _nan(good))
    assert int(m["skipped_updates"]) == 1 and int(m["skipped_tail"]) == 1
    assert _bits(new) == before  # params, optimizer, step and RNG all unchanged


def test_skipped_update_between_good_ones_leaves_no_trace(learner):
    """[good1, NaN, good2] in one call ends where [good1, good2] does, bit for bit."""
    g1, g2 = _batch(_samples(8, seed=4)), _batch(_samples(8, seed=5))
    a, ma = learner.step(_fresh_state(learner), _stack(g1, _nan(g1), g2))
    b, mb = learner.step(_fresh_state(learner), _stack(g1, g2))
    assert int(ma["skipped_updates"]) == 1 and int(ma["skipped_tail"]) == 0
    assert int(mb["skipped_updates"]) == 0
    assert _bits(a) == _bits(b)
    _, mc = learner.step(_fresh_state(learner), _stack(g1, _nan(g1), _nan(g2)))
    assert int(mc["skipped_tail"]) == 2
