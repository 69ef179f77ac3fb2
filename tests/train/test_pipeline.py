"""grain epochs -> stacked [M, A, ...] update batches."""

import numpy as np
import pytest

from grow_jax.data.pipeline import epoch_batches, stack_micro_batches
from grow_jax.data.samples import BatchShape, decision_samples

from ._synth import make_trajectory, tiny_config

CFG = tiny_config()
N = 11  # not a multiple of batch * accumulation: the last update is topped up with padding


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    out = []
    while len(out) < N:
        tr = make_trajectory(rng, CFG, 4, action_len=(1, 3))
        out += decision_samples(tr, rng.normal(size=4).astype(np.float32), CFG)
    out = out[:N]
    for i, s in enumerate(out):  # tag: the first prompt token names the sample
        s.input_ids[0] = 1 + i
    return out


def _ids_per_update(batch):
    """Sample tags of the real rows (left padding: a row's first real token is its tag)."""
    t = batch["input_ids"].shape[-1]
    tags = []
    for row_ids, row_mask in zip(
        batch["input_ids"].reshape(-1, t), batch["attention_mask"].reshape(-1, t)
    ):
        if row_mask.any():
            tags.append(int(row_ids[np.argmax(row_mask)]))
    return tags


def _epochs(samples, seed, epochs=3):
    shape = BatchShape.fit(samples, batch=4)
    return list(epoch_batches(samples, shape, CFG, epochs=epochs, accumulation=2, seed=seed))


def test_every_sample_once_per_epoch_and_padding_rows_masked(samples):
    shape = BatchShape.fit(samples, batch=4)
    epochs = _epochs(samples, seed=0)
    assert len(epochs) == 3
    for batch in epochs:
        assert batch["input_ids"].shape == (2, 2, 4, shape.seq)  # ceil(11 / 8) = 2 updates
        assert batch["position_ids"].shape == (2, 2, 3, 4, shape.seq)
        assert batch["target_pos"].shape == (2, 2, 4, shape.targets)
        assert batch["pixel_values"].shape[:2] == (2, 2)
        assert sorted(_ids_per_update(batch)) == list(range(1, N + 1))
        real = batch["attention_mask"].any(-1)  # [M, A, B]
        assert real.sum() == N
        assert not batch["loss_mask"][~real].any()
        assert not batch["advantages"][~real].any()
        assert (batch["loss_mask"][real].sum(-1) >= 1).all()


def test_new_permutation_each_epoch_and_seed_reproduces(samples):
    a, b, c = _epochs(samples, seed=0), _epochs(samples, seed=0), _epochs(samples, seed=1)
    orders = [_ids_per_update(x) for x in a]
    assert len({tuple(o) for o in orders}) == 3, orders
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert [_ids_per_update(x) for x in c] != orders


def test_errors_name_the_problem(samples):
    shape = BatchShape.fit(samples, batch=4)
    with pytest.raises(ValueError, match="no samples"):
        next(epoch_batches([], shape, CFG, epochs=1))
    with pytest.raises(ValueError, match="3 micro-batches do not split into updates of 2"):
        stack_micro_batches([{"x": np.zeros(2)}] * 3, 2)
