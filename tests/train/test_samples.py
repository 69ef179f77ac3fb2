"""State-action samples and collation: targets, advantages, padding, image layouts, logits."""

import numpy as np
import pytest
from flax import nnx

from grow_jax.data.samples import BatchShape, collate, conversation_sample, decision_samples
from grow_jax.rollout.types import Step, Trajectory
from grow_jax.train.step import action_logits

from ._synth import image_block, make_trajectory, tiny_config, tiny_model

CFG = tiny_config()


def _hand_trajectory(full_history: bool) -> Trajectory:
    """Two decisions with 28x28 frames (one merged image token each)."""
    rng = np.random.default_rng(0)
    f0, f1 = (rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for _ in range(2))
    p0 = np.concatenate([[7, 8], image_block(CFG, f0), [9]]).astype(np.int32)  # 6 tokens
    a0 = np.asarray([11, 12], np.int32)
    p1 = (
        np.concatenate([p0, a0, image_block(CFG, f1), [10]])
        if full_history
        else np.concatenate([[7, 8], image_block(CFG, f1), [10]])
    ).astype(np.int32)
    a1 = np.asarray([13, 14, 15], np.int32)
    steps = [
        Step(f0, p0, a0, np.asarray([-0.1, -0.2], np.float32)),
        Step(f1, p1, a1, np.asarray([-0.3, -0.4, -0.5], np.float32), reward=1.0),
    ]
    return Trajectory("hand", "go", 0, 0, steps)


def test_decision_samples_hand_checked():
    tr = _hand_trajectory(full_history=False)
    s0, s1 = decision_samples(tr, np.asarray([0.5, -1.5], np.float32), CFG)
    np.testing.assert_array_equal(s0.input_ids, [7, 8, 502, 500, 503, 9, 11, 12])
    np.testing.assert_array_equal(s0.target_pos, [5, 6])  # last prompt token predicts a0[0]
    np.testing.assert_array_equal(s0.input_ids[s0.target_pos + 1], [11, 12])
    np.testing.assert_array_equal(s0.advantages, [0.5, 0.5])
    np.testing.assert_allclose(s0.old_logprobs, [-0.1, -0.2])
    np.testing.assert_array_equal(s1.target_pos, [5, 6, 7])
    np.testing.assert_array_equal(s1.advantages, [-1.5] * 3)
    np.testing.assert_allclose(s1.old_logprobs, [-0.3, -0.4, -0.5])
    for s in (s0, s1):  # one frame each: 2x2 patches of 14 px
        np.testing.assert_array_equal(s.image_grid_thw, [[1, 2, 2]])
        assert s.pixel_values.shape == (4, CFG.vision.patch_dim)
        assert s.position_ids.shape == (3, s.length)
    (only,) = decision_samples(tr, np.asarray([0.5, -1.5]), CFG, keep=[False, True])
    np.testing.assert_array_equal(only.input_ids, s1.input_ids)


def test_conversation_sample_hand_checked():
    tr = _hand_trajectory(full_history=True)
    s = conversation_sample(tr, np.asarray([2.0, 3.0], np.float32), CFG)
    # p0 (6) + a0 (2) + image block (3) + [10] (1) = p1 (12 tokens), then a1 (3)
    np.testing.assert_array_equal(
        s.input_ids, [7, 8, 502, 500, 503, 9, 11, 12, 502, 500, 503, 10, 13, 14, 15]
    )
    np.testing.assert_array_equal(s.target_pos, [5, 6, 11, 12, 13])
    np.testing.assert_array_equal(s.input_ids[s.target_pos + 1], [11, 12, 13, 14, 15])
    np.testing.assert_array_equal(s.advantages, [2, 2, 3, 3, 3])
    np.testing.assert_allclose(s.old_logprobs, [-0.1, -0.2, -0.3, -0.4, -0.5])
    np.testing.assert_array_equal(s.image_grid_thw, [[1, 2, 2]] * 2)
    # M-RoPE: the second image's text position continues after the first turn
    assert s.position_ids[0, -1] == s.length - 1


def test_conversation_sample_rejects_prompts_without_history():
    tr = _hand_trajectory(full_history=False)
    with pytest.raises(ValueError, match=r"full history.*step 1 .*does not extend step 0's"):
        conversation_sample(tr, np.zeros(2, np.float32), CFG)
    with pytest.raises(ValueError, match="no steps"):
        conversation_sample(Trajectory("empty", "", 0, 0), np.zeros(0), CFG)


def _samples(seed=0, n_traj=3, horizon=3, frame_hw=(28, 28), action_len=(1, 3)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_traj):
        tr = make_trajectory(
            rng, CFG, horizon, frame_hw=frame_hw, text_len=3 + 2 * i, action_len=action_len
        )
        out += decision_samples(tr, rng.normal(size=horizon).astype(np.float32), CFG)
    return out


def test_collate_left_pads_and_targets_are_next_tokens():
    samples = _samples()
    shape = BatchShape.fit(samples, batch=len(samples) + 2)
    b = collate(samples, shape, CFG, pad_id=0)
    assert b["input_ids"].shape == (shape.batch, shape.seq)
    assert b["position_ids"].shape == (3, shape.batch, shape.seq)
    for i, s in enumerate(samples):
        off = shape.seq - s.length
        np.testing.assert_array_equal(b["input_ids"][i, off:], s.input_ids)
        assert not b["input_ids"][i, :off].any() and not b["attention_mask"][i, :off].any()
        assert b["attention_mask"][i, off:].all()
        np.testing.assert_array_equal(b["position_ids"][:, i, off:], s.position_ids)
        k = len(s.target_pos)
        np.testing.assert_array_equal(b["target_pos"][i, :k], s.target_pos + off)
        np.testing.assert_array_equal(
            b["targets"][i, :k], b["input_ids"][i, s.target_pos + off + 1]
        )
        np.testing.assert_array_equal(b["targets"][i, :k], s.input_ids[s.target_pos + 1])
        assert not b["targets"][i, k:].any()
        np.testing.assert_array_equal(b["loss_mask"][i], np.arange(shape.targets) < k)
        np.testing.assert_array_equal(b["advantages"][i, :k], s.advantages)
        np.testing.assert_array_equal(b["old_logprobs"][i, :k], s.old_logprobs)
    for key in ("input_ids", "attention_mask", "loss_mask", "advantages"):  # padding rows
        assert not b[key][len(samples) :].any(), key
    with pytest.raises(ValueError, match="do not fit a batch"):
        collate(samples, BatchShape(2, shape.seq, shape.targets, shape.images), CFG)


def test_image_layout_batched_for_equal_frames_flat_otherwise():
    equal = _samples(frame_hw=(56, 56))
    shape = BatchShape.fit(equal, batch=len(equal))
    assert shape.images.grid == (1, 4, 4)
    b = collate(equal, shape, CFG)
    assert b["pixel_values"].shape == (shape.images.count, 16, CFG.vision.patch_dim)
    assert shape.images.count >= len(equal)

    rng = np.random.default_rng(1)
    sizes = [(28, 28), (56, 28), (28, 56)]
    mixed = decision_samples(make_trajectory(rng, CFG, 3, frame_hw=sizes), np.ones(3), CFG)
    shape = BatchShape.fit(mixed, batch=4)
    assert shape.images.grid is None
    b = collate(mixed, shape, CFG)
    assert b["pixel_values"].ndim == 2 and b["pixel_values"].shape[0] == shape.images.patches
    used = 4 + 8 + 8
    assert shape.images.patches >= used
    assert len(np.unique(b["vision_segment_ids"][:used])) == 3


@pytest.mark.parametrize("frames", ["equal", "mixed"])
def test_batched_action_logits_match_single_sample_forward(frames):
    model = tiny_model(CFG)
    rng = np.random.default_rng(2)
    if frames == "equal":
        samples = _samples(seed=3, n_traj=2, horizon=2, frame_hw=(56, 56), action_len=(2, 2))
    else:  # (few distinct lengths: each one compiles the single-sample reference)
        sizes = [(28, 28), (56, 28), (28, 56)]
        samples = decision_samples(make_trajectory(rng, CFG, 3, frame_hw=sizes), np.ones(3), CFG)
    shape = BatchShape.fit(samples, batch=len(samples) + 1)
    assert (shape.images.grid is None) == (frames == "mixed")
    batch = collate(samples, shape, CFG)
    got = np.asarray(nnx.jit(action_logits)(model, batch))
    for i, s in enumerate(samples):
        full = model(s.input_ids[None], s.pixel_values, s.image_grid_thw)[0]
        k = len(s.target_pos)
        np.testing.assert_allclose(got[i, :k], np.asarray(full)[s.target_pos], atol=1e-5, rtol=1e-5)
