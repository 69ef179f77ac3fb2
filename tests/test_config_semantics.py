"""What the formerly dead config keys do: env.image_size, agent.max_prompt_tokens,
env.actions_per_decision (logging.every: tests/test_paths_e2e.py)."""

import numpy as np
import pytest

from grow_jax.agent.adapter import make_agent
from grow_jax.agent.tokenizer import load_tokenizer
from grow_jax.config_utils import ConfigError, base_config, resolve_config
from grow_jax.envs import make_env, make_tasks
from grow_jax.envs.base import resize_frame


def _config(**env):
    c = base_config()
    for k, v in env.items():
        c.env[k] = v
    return resolve_config(c)


def test_resize_frame_longer_side_and_identity():
    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    assert resize_frame(frame, 448).shape == (252, 448, 3)
    assert resize_frame(frame, 64).shape == (36, 64, 3)
    assert resize_frame(frame, 640) is frame  # already that size: untouched
    assert resize_frame(frame[:100, :50], 200).shape == (200, 100, 3)


def test_image_size_reaches_the_env_and_none_keeps_native_frames():
    (task,) = make_tasks("babyai", ids=("BabyAI-GoToRedBallNoDists-v0",))
    native = make_env(task, tile_size=4).reset(3)["image"]
    assert native.shape == (28, 28, 3)
    np.testing.assert_array_equal(make_env(task, tile_size=4, image_size=None).reset(3)["image"],
                                  native)
    np.testing.assert_array_equal(make_env(task, tile_size=4, image_size=28).reset(3)["image"],
                                  native)
    env = make_env(task, tile_size=4, image_size=56)
    assert env.reset(3)["image"].shape == (56, 56, 3)
    assert env.step(2)[0]["image"].shape == (56, 56, 3)
    assert env.expert_action() is not None  # the wrapped env's own methods stay reachable
    (mc,) = make_tasks("minecraft", ids=("mine_block:oak_log",))
    assert make_env(mc, fake=True, image_size=64).reset(0)["image"].shape == (36, 64, 3)
    with pytest.raises(ValueError, match="env.image_size"):
        make_env(task, image_size=0)


def test_tiny_cpu_frames_stay_native():
    import importlib.util
    import os
    import types

    from grow_jax.train.trainer import Run

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tiny_cpu.py")
    spec = importlib.util.spec_from_file_location("tiny_cpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = resolve_config(mod.get_config())
    assert Run.env_kwargs(types.SimpleNamespace(config=c)) == {"tile_size": 4, "image_size": None,
                                                                  "actions_per_decision": 1}


def test_max_prompt_tokens_caps_prompts_with_an_error_naming_the_key():
    tok = load_tokenizer()
    c = base_config()
    c.agent.max_prompt_tokens = 40
    agent = make_agent(resolve_config(c), tok)
    assert len(agent.prompt_ids("go to the red ball", (), 4)) <= 40
    with pytest.raises(ConfigError, match=r"exceeds 'agent.max_prompt_tokens'=40"):
        agent.prompt_ids("go to the red ball", (), 64)


def test_actions_per_decision_sets_the_minecraft_chunk():
    tok = load_tokenizer()
    with pytest.raises(ConfigError, match=r"'agent.max_new_tokens'=8 is below the 25 tokens"):
        make_agent(_config(suite="minecraft", actions_per_decision=2), tok)
    c = base_config()
    c.env.suite, c.env.actions_per_decision, c.agent.max_new_tokens = "minecraft", 2, 25
    agent = make_agent(resolve_config(c), tok)
    assert agent.codec.chunk == 2 and agent.codec.num_tokens == 2 * 12 + 1
    action = np.zeros((2, 12), np.int64)
    decoded, valid, _ = agent.decode(np.asarray(agent.encode(action)))
    assert valid and decoded.shape == (2, 12)
    assert make_agent(_config(suite="babyai"), tok).codec.num_tokens == 2
    with pytest.raises(ConfigError, match="'env.actions_per_decision' must be 1 for suite"):
        make_agent(_config(suite="crafter", actions_per_decision=4), tok)
