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


@pytest.mark.slow
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


def test_skip_guard_counts_runs_across_calls_and_stops_with_one_line():
    from grow_jax.errors import RunError
    from grow_jax.train.faults import SkipGuard

    guard = SkipGuard(max_in_a_row=5)
    calls = [(1, 1, 4), (4, 4, 4)]  # (skipped, trailing run, updates in the call)
    for skipped, tail, n in calls:
        m = {"loss": 0.0, "skipped_updates": skipped, "skipped_tail": tail}
        guard.update(m, n)
        assert "skipped_tail" not in m and "skipped_updates" not in m  # the row gets totals
    assert guard.row() == {"skipped_updates": 5} and guard.row() == {"skipped_updates": 0}
    with pytest.raises(RunError, match=r"5 updates in a row .* run/checkpoints/7") as e:
        guard.check(9, "run/checkpoints/7")
    assert "\n" not in str(e.value)
    guard.update({"skipped_updates": 1, "skipped_tail": 0}, 3)  # a good update ends the run
    guard.check(10, "run/checkpoints/7")
    SkipGuard(max_in_a_row=0).check(1, "x")  # 0: never stops
