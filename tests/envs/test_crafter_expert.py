"""The scripted Crafter expert (envs/crafter_expert.py): success rate per achievement on
held-out world seeds, valid codec actions, demos through `bot_episodes`, and the world
cache that makes a group's resets cheap."""

import numpy as np
import pytest

from grow_jax.agent.codecs import make_codec
from grow_jax.agent.tokenizer import load_tokenizer
from grow_jax.data import demos
from grow_jax.envs import crafter, make_env, make_tasks

# achievement -> episode cap (decisions) the expert is held to here; configs/crafter.py's
# tasks are held to its episode cap (tests/test_crafter_config.py)
CAPS = {"collect_wood": 24, "collect_sapling": 24, "place_plant": 24, "collect_drink": 24,
        "place_table": 24, "eat_cow": 24, "make_wood_pickaxe": 40, "make_wood_sword": 40,
        "collect_stone": 60, "place_stone": 60, "collect_coal": 100, "defeat_zombie": 80,
        "wake_up": 60}
SEEDS = range(500, 505)


def _play(achievement: str, seed: int, cap: int):
    (task,) = crafter.make_tasks([achievement], seeds=[seed], max_steps=cap)
    env = make_env(task)
    env.reset()
    actions = []
    for _ in range(cap):
        actions.append(env.expert_action())
        _, r, term, trunc, info = env.step(actions[-1])
        if term or trunc:
            break
    return info["success"], actions


@pytest.mark.slow
@pytest.mark.parametrize("achievement", sorted(CAPS))
def test_expert_succeeds(achievement):
    wins = [_play(achievement, s, CAPS[achievement])[0] for s in SEEDS]
    assert np.mean(wins) >= 0.8, (achievement, wins)


def test_expert_actions_are_valid_codec_actions():
    codec = make_codec("crafter", load_tokenizer(None))
    ok, actions = _play("make_wood_pickaxe", 501, CAPS["make_wood_pickaxe"])
    assert ok and {"do", "place_table", "make_wood_pickaxe"} <= {
        crafter.ACTION_NAMES[a] for a in actions}
    for a in set(actions):
        assert isinstance(a, int) and codec.decode(codec.encode(a)) == (a, True)


def test_expert_refuses_what_it_cannot_play():
    (task,) = crafter.make_tasks(["eat_plant"], seeds=[0], max_steps=5)
    env = make_env(task)
    env.reset()
    with pytest.raises(ValueError, match="cannot play 'eat_plant'"):
        env.expert_action()


def test_bot_episodes_record_crafter_expert_decisions():
    tasks = crafter.make_tasks(["collect_wood"], max_steps=30)
    recs = list(demos.bot_episodes(tasks, 2, seed=500, env_kwargs={}, max_steps=30))
    assert {r["episode"] for r in recs} == {0, 1}
    assert all(r["frame"].shape == (64, 64, 3) and r["instruction"] == "collect wood"
               for r in recs)
    assert crafter.ACTION_NAMES[recs[-1]["action"]] == "do"  # the episode ends on a collect


def test_bot_episodes_without_an_expert_is_an_error():
    tasks = make_tasks("minecraft", ids=("mine_block:oak_log",))
    with pytest.raises(ValueError, match="no expert for suite 'minecraft'.*sft.demo_path"):
        next(demos.bot_episodes(tasks, 1, seed=0, env_kwargs={"fake": True}))


def test_cached_world_replays_a_generated_one():
    """A second reset into a seed restores the cached world: the same frames, map and RNG
    as generating it (compared before step 10, where crafter's own set-ordered despawn
    choice may differ between any two runs)."""
    (task,) = crafter.make_tasks(["eat_cow"], seeds=[0], max_steps=20)

    def play(env):
        frames = [env.reset(77)["image"]]
        for _ in range(9):
            frames.append(env.step(env.expert_action())[0]["image"])
        w = env._env._world
        return np.stack(frames), w._mat_map.copy(), w.random.get_state()[1].copy()

    crafter._WORLDS.clear()
    generated = play(make_env(task))
    assert (77, (64, 64)) in crafter._WORLDS
    restored = play(make_env(task))
    for g, r in zip(generated, restored):
        np.testing.assert_array_equal(g, r)
    crafter._WORLDS.clear()  # and against a world generated afresh
    np.testing.assert_array_equal(play(make_env(task))[0], generated[0])
