"""rollout/loop.run_episodes on BabyAI: trajectories, seeds, groups, invalid text -> penalty,
with a scripted sampler (exact checks) and a tiny real model (the jitted path)."""

import jax
import numpy as np
import pytest
from flax import nnx

from grow_jax.agent.adapter import make_agent
from grow_jax.agent.tokenizer import load_tokenizer, special_token_ids
from grow_jax.config_utils import base_config, resolve_config
from grow_jax.envs import make_env, make_tasks
from grow_jax.envs.pool import EnvPool
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.data.samples import encode_images
from grow_jax.rollout.loop import image_token_count, run_episodes, split_images

LEVEL = "BabyAI-GoToRedBallNoDists-v0"


@pytest.fixture(scope="module")
def setup():
    c = base_config()
    c.env.max_steps = 3
    c = resolve_config(c)
    tok = load_tokenizer()
    ids = special_token_ids(tok)
    mcfg = Qwen2VLConfig.tiny(vocab_size=-(-len(tok) // 64) * 64, image_token_id=ids.image_pad,
                              video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                              vision_end_token_id=ids.vision_end, patch_size=8,
                              spatial_merge_size=2)
    (task,) = make_tasks("babyai", ids=(LEVEL,), max_steps=3)
    return c, tok, mcfg, task, make_agent(c, tok)


class ScriptedSampler:
    """Env i (in the order of the live batch) answers `answers[i]`: token ids."""

    def __init__(self, config, answers):
        self.config, self.answers, self.calls = config, answers, []

    def sample(self, params, prompts, images, *, rng, row_ids=None):
        self.calls.append(len(prompts))
        n = len(prompts)
        toks = [np.asarray(self.answers[i % len(self.answers)], np.int32) for i in range(n)]
        return toks, [np.full(len(t), -0.5, np.float32) for t in toks]


def test_scripted_episodes_seeds_groups_and_format_penalty(setup):
    c, tok, mcfg, task, agent = setup
    left = tok.encode("left", add_special_tokens=False) + [agent.stop_ids[0]]
    garbage = tok.encode("fly away", add_special_tokens=False)  # no <|im_end|>: invalid
    sampler = ScriptedSampler(mcfg, [left, garbage])
    with EnvPool([task, task]) as pool:
        trajs = run_episodes(pool, agent, sampler, None, seeds=[11, 12], groups=[0, 1],
                             rng=jax.random.key(0), format_penalty=0.25)
    assert [(t.seed, t.group, t.task_id, t.family) for t in trajs] == [
        (11, 0, LEVEL, "GoTo"), (12, 1, LEVEL, "GoTo")]
    assert sampler.calls == [2, 2, 2]  # one batched call per turn, 3 turns (max_steps)
    for tr in trajs:
        assert tr.length == 3 and tr.truncated and not tr.terminated and not tr.success
    valid, invalid = trajs
    assert [s.invalid for s in valid.steps] == [False] * 3
    assert [s.action_text for s in valid.steps] == ["left"] * 3
    assert [s.invalid for s in invalid.steps] == [True] * 3
    assert [s.action_text for s in invalid.steps] == ["(invalid)"] * 3
    np.testing.assert_allclose(valid.rewards, 0.0)  # turning never reaches the ball
    np.testing.assert_allclose(invalid.rewards, -0.25)
    # each env ran its own seed: the first frame is that seed's reset frame
    for tr in trajs:
        np.testing.assert_array_equal(tr.steps[0].frame, make_env(task).reset(tr.seed)["image"])
    n_img = image_token_count(trajs[0].steps[0].frame.shape, mcfg)
    np.testing.assert_array_equal(valid.steps[1].prompt_ids,
                                  agent.prompt_ids(valid.instruction, (), n_img))
    np.testing.assert_array_equal(valid.steps[0].action_ids, left)
    np.testing.assert_array_equal(valid.steps[0].logprobs, [-0.5, -0.5])
    # the frames seen change as the agent turns
    assert not np.array_equal(valid.steps[0].frame, valid.steps[1].frame)


def test_seed_length_mismatch_is_an_error(setup):
    c, tok, mcfg, task, agent = setup
    with EnvPool([task]) as pool, pytest.raises(ValueError, match="one seed and one group"):
        run_episodes(pool, agent, ScriptedSampler(mcfg, [[1]]), None, seeds=[1, 2],
                     groups=[0], rng=jax.random.key(0))


def test_tiny_model_episodes_are_reproducible(setup):
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.sampling.generate import Sampler, SamplingParams

    c, tok, mcfg, task, agent = setup
    model = Qwen2VL(mcfg, rngs=nnx.Rngs(0))
    sampler = Sampler(model, SamplingParams(max_new_tokens=2, stop_token_ids=agent.stop_ids))
    params = nnx.state(model, nnx.Param)

    def play(key):
        with EnvPool([task] * 3) as pool:
            return run_episodes(pool, agent, sampler, params, seeds=[1, 1, 2], groups=[0, 0, 1],
                                rng=jax.random.key(key), format_penalty=0.1)

    a, b = play(0), play(0)
    for ta, tb in zip(a, b, strict=True):
        assert 1 <= ta.length <= 3 and ta.length == tb.length
        for sa, sb in zip(ta.steps, tb.steps, strict=True):
            np.testing.assert_array_equal(sa.action_ids, sb.action_ids)
            assert len(sa.logprobs) == len(sa.action_ids) and np.all(sa.logprobs <= 0)
            assert sa.invalid == (not agent.decode(sa.action_ids)[1])
    np.testing.assert_array_equal(a[0].steps[0].frame, a[1].steps[0].frame)  # same seed


class CountingSampler:
    """The real sampler, recording each call's batch size."""

    def __init__(self, sampler):
        self.inner, self.config, self.calls = sampler, sampler.config, []

    def sample(self, params, prompts, images, *, rng, row_ids=None):
        self.calls.append(len(prompts))
        return self.inner.sample(params, prompts, images, rng=rng, row_ids=row_ids)


def test_pipelined_rollouts_equal_sequential_with_worker_processes(setup):
    """env.pipeline: two halves, each stepped in both env workers while the other half is
    sampled, give the sequential loop's trajectories: tokens, rewards, frames, seeds; the
    logprobs to float rounding (XLA's row results can change in the last bit with the
    batch size; here they do not)."""
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.sampling.generate import Sampler, SamplingParams

    c, tok, mcfg, task, agent = setup
    model = Qwen2VL(mcfg, rngs=nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    sampler = CountingSampler(Sampler(model, SamplingParams(
        max_new_tokens=2, stop_token_ids=agent.stop_ids)))
    kw = dict(seeds=[1, 1, 2, 3, 4, 5], groups=[0, 0, 1, 2, 3, 4], rng=jax.random.key(7),
              format_penalty=0.1)
    with EnvPool([task] * 6, mode="async", num_workers=2) as pool:
        seq = run_episodes(pool, agent, sampler, params, pipeline=False, **kw)
        n_seq = len(sampler.calls)
        pipe = run_episodes(pool, agent, sampler, params, pipeline=True, **kw)
        with pytest.raises(RuntimeError, match="in flight"):  # a worker takes one command
            handle = pool.step_async([0], indices=[0])
            pool.step_async([0], indices=[1])
        pool.step_wait(handle)
    assert max(sampler.calls[:n_seq]) == 6 and max(sampler.calls[n_seq:]) <= 3  # halves
    assert [(t.seed, t.group, t.length) for t in seq] == [(t.seed, t.group, t.length)
                                                           for t in pipe]
    assert any(sa.action_ids.tolist() != sb.action_ids.tolist()  # same seed, own keys
               for sa, sb in zip(seq[0].steps, seq[1].steps))
    for ta, tb in zip(seq, pipe, strict=True):
        assert (ta.success, ta.terminated, ta.truncated) == (tb.success, tb.terminated,
                                                             tb.truncated)
        for sa, sb in zip(ta.steps, tb.steps, strict=True):
            np.testing.assert_array_equal(sa.action_ids, sb.action_ids)
            np.testing.assert_allclose(sa.logprobs, sb.logprobs, rtol=0, atol=1e-5)
            np.testing.assert_array_equal(sa.frame, sb.frame)
            np.testing.assert_array_equal(sa.prompt_ids, sb.prompt_ids)
            assert (sa.reward, sa.invalid, sa.action_text) == (sb.reward, sb.invalid,
                                                               sb.action_text)


def test_one_patch_call_per_turn_splits_into_each_rows_images():
    """The loop patches a turn's frames in one call; each row gets what encoding its own
    frames alone gives (rows of 1, 3 and 2 frames, as with agent.history > 0)."""
    mcfg = Qwen2VLConfig.tiny()
    rng = np.random.default_rng(0)
    rows = [[rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for _ in range(k)]
            for k in (1, 3, 2)]
    got = split_images(encode_images([f for fs in rows for f in fs], mcfg), [1, 3, 2])
    for fs, (pix, grid) in zip(rows, got):
        want_pix, want_grid = encode_images(fs, mcfg)
        np.testing.assert_array_equal(pix, want_pix)
        np.testing.assert_array_equal(grid, want_grid)
    (alone,) = split_images(encode_images(rows[1], mcfg), [3])  # one row: the whole turn
    np.testing.assert_array_equal(alone[0], encode_images(rows[1], mcfg)[0])
