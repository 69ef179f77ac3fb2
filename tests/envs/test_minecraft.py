"""The MineStudio adapter against the MineStudio-shaped fake: task set-up commands, goal reward
and success, every action group and camera bin, and a GROW iteration that trains."""

import re

import numpy as np
import pytest

from grow_jax.envs import make_env, minecraft, minestudio
from grow_jax.envs.minestudio_fake import FakeMinecraftSim, env_action_space

TASKS = {t.task_id: t for t in minecraft.make_tasks()}
NOOP = minecraft.noop_groups()


def _groups(**set_):
    row = NOOP.copy()
    for name, v in set_.items():
        row[minecraft.GROUPS.index(name)] = v
    return row


ATTACK = _groups(attack=1)


def _env(task_id, script=None, **kw):
    """A fake-backed env; the test keeps the simulator to inspect what reached it."""
    task = TASKS[task_id]
    sims = []

    def backend(seed, callbacks):
        sims.append(FakeMinecraftSim(obs_size=minestudio.FRAME_WH, seed=seed,
                                     callbacks=callbacks, script=script))
        return sims[-1]

    env = make_env(task, backend=backend, **kw)
    return env, sims[0]


def _replaced(commands):
    """/replaceitem commands -> {slot name: (item, count)}."""
    out = {}
    for c in commands:
        if m := re.match(r"^/replaceitem entity @p (\S+) minecraft:(\S+) (\d+)$", c):
            out[m[1]] = (m[2], int(m[3]))
    return out


def _pressed(actions):
    return [sorted(k for k, v in a.items() if k != "camera" and v)
            + ([tuple(float(x) for x in a["camera"])] if np.any(a["camera"]) else [])
            for a in actions]


def test_mine_block_setup_is_the_row():
    env, sim = _env("mine_block:oak_log")  # tools iron_axe|-, seed 100, -216,72,202
    assert sim.seed == 100
    env.reset(seed=7)
    assert sim.env.commands == [
        "/gamerule sendCommandFeedback false",
        "/replaceitem entity @p weapon.mainhand minecraft:iron_axe 1",
        "/tp @s -216 72 202",
    ]
    assert sim.env.inventory[0] == ("iron_axe", 1) and sim.env.position == (-216.0, 72.0, 202.0)
    assert env.last_setup.init_actions == () and (env.last_setup.event, env.last_setup.goal) == (
        "mine_block", "oak_log")


def test_craft_item_setup_is_the_row():
    # need_crafting_table; stick>=2;cobblestone>=3 at random slots, slot 0 kept free
    env, sim = _env("craft_item:stone_axe")
    env.reset(seed=3)
    cmds = sim.env.commands
    assert cmds[0] == "/gamerule sendCommandFeedback false" and cmds[-1] == "/tp @s -1838 72 30501"
    placed = _replaced(cmds)
    assert sorted(placed.values()) == [("cobblestone", 3), ("stick", 2)] and len(cmds) == 4
    assert "weapon.mainhand" not in placed
    held = {t: n for t, n in sim.env.inventory.values() if t != "none"}
    assert held == {"stick": 2, "cobblestone": 3}
    assert _pressed(env.last_setup.init_actions)[:5] == [
        ["hotbar.1"], [], [(30.0, -30.0)], ["use"], ["use"]]
    assert len(env.last_setup.init_actions) == 16
    assert env.last_setup.event == "craft_item"
    # a craft task without needs starts in the open inventory; its row fixes slot 14
    env, sim = _env("craft item crafting_table")
    env.reset(seed=3)
    assert _replaced(sim.env.commands) == {"inventory.5": ("oak_planks", 4)}  # >3, @14
    assert _pressed(env.last_setup.init_actions) == [["inventory"]] + [[]] * 9
    assert sim.env.gui_open


def test_smelt_item_setup_is_the_row():
    env, sim = _env("smelt_item:coal")  # need_furnace; coal_ore>=1;coal>3
    env.reset(seed=0)
    placed = _replaced(sim.env.commands)
    assert sorted(placed.values()) == [("coal", 4), ("coal_ore", 1)]
    assert "weapon.mainhand" not in placed
    assert _pressed(env.last_setup.init_actions)[:5] == [
        ["hotbar.1"], [], [(30.0, 30.0)], ["use"], ["inventory", "use"]]
    assert (env.last_setup.event, env.last_setup.goal) == ("craft_item", "coal")


def test_kill_entity_setup_is_the_row():
    env, sim = _env("kill_entity:zombie")  # diamond_sword|diamond_axe|-, /time set night
    tools = set()
    for seed in range(12):
        env.reset(seed=seed)
        cmds = sim.env.commands[-5:]
        tools.add(_replaced(cmds)["weapon.mainhand"])
        assert cmds[2:4] == ["/tp @s 31 64 61", "/time set night"]
        m = re.match(r"^/execute as @p at @p run summon minecraft:zombie ~(\S+) ~3 ~(\S+) "
                     r"\{Age:0\}$", cmds[4])
        assert m and -1 <= float(m[1]) <= 1 and 2 <= float(m[2]) <= 7
    assert tools == {("diamond_sword", 1), ("diamond_axe", 1)}  # "-" is never drawn
    assert sim.env.entities == ["zombie"]  # a hard reset clears the previous episode's mob
    first = sim.env.commands[-5:]
    env.reset(seed=11)
    assert sim.env.commands[-5:] == first  # the seed fixes every draw


def test_interact_block_setup_is_the_row():
    env, sim = _env("custom:interact_with_brewingstand")
    env.reset(seed=0)
    assert sim.env.commands == ["/gamerule sendCommandFeedback false", "/tp @s 28 63 47",
                                "/setblock ^0 ^0 ^5 minecraft:brewing_stand"]
    assert (env.last_setup.event, env.last_setup.goal) == ("custom", "interact_with_brewingstand")


def _at_tick(reports):
    """Script: {engine tick: [(event, key, n), ...]} counted from the last hard reset."""
    return lambda engine, action: reports.get(engine.tick, [])


@pytest.mark.parametrize("task_id,event,goal", [
    ("mine_block:oak_log", "mine_block", "oak_log"),
    ("craft_item:stone_axe", "craft_item", "stone_axe"),
    ("smelt_item:coal", "craft_item", "coal"),
    ("kill_entity:sheep", "kill_entity", "sheep"),
    ("custom:interact_with_anvil", "custom", "interact_with_anvil"),
])
def test_reward_and_success_exactly_at_the_goal_event(task_id, event, goal):
    env, sim = _env(task_id)
    env.reset(seed=0)
    t0 = sim.env.tick  # set-up ticks: 20 empty frames, commands, waits, GUI actions
    sim.env.script = _at_tick({
        t0 + 1: [("pickup", goal, 1)],  # the goal's key under another event
        t0 + 2: [(event, goal + "_other", 1)],  # the goal event for another object
        t0 + 6: [(event, goal, 1)],
        t0 + 7: [(event, goal, 2)],
    })
    out = env.step(np.stack([NOOP] * 4))
    assert out[1:] == (0.0, False, False, {"success": False})
    out = env.step(np.stack([NOOP] * 4))  # ticks t0+5..t0+8: the goal at t0+6 ends it
    assert out[1:] == (1.0, True, False, {"success": True}) and sim.env.tick == t0 + 6
    out = env.step(np.stack([NOOP] * 4))  # counted once per episode: more kills pay nothing
    assert out[1] == 0.0 and out[4]["success"]
    env.reset(seed=0)
    sim.env.script = _at_tick({})
    assert env.step(np.stack([NOOP] * 4))[1:] == (0.0, False, False, {"success": False})


def test_success_counts_from_the_episode_start_with_fast_reset():
    """Statistics survive a fast reset (no new world); success needs a new increase."""
    env, sim = _env("mine_block:oak_log", fast_reset=True)
    sim.env.script = lambda engine, action: [("mine_block", "oak_log", 1)] if action[
        "attack"] else []
    env.reset(seed=0)
    assert env.step(ATTACK)[1:] == (1.0, True, False, {"success": True})
    env.reset(seed=1)
    assert sim.env.hard_resets == 1 and sim.env.stats["mine_block"]["oak_log"] == 1
    assert "/kill @e[type=!player]" in sim.env.commands
    assert env.step(np.stack([NOOP] * 4))[1:] == (0.0, False, False, {"success": False})
    assert env.step(ATTACK)[1:] == (1.0, True, False, {"success": True})


def test_every_group_value_and_camera_bin_round_trips_through_the_simulator():
    env, sim = _env("mine_block:oak_log")
    env.reset(seed=0)
    space = env_action_space()
    for g, base in enumerate(minecraft.BASES):
        for v in range(base):
            row = NOOP.copy()
            row[g] = v
            if g in (10, 11) and v != minecraft.CAMERA_CENTER_BIN:
                row[8] = 1
            if g == 8 and v:  # the flag alone moves nothing, so an env action cannot carry it
                row[11] = minecraft.CAMERA_CENTER_BIN + 1
            act = minecraft.groups_to_minerl(row)
            assert space.contains({k: np.asarray(act[k], space[k].dtype) for k in space})
            np.testing.assert_array_equal(minecraft.minerl_to_groups(act), row)
            pitch, yaw, gui = sim.env.pitch, sim.env.yaw, sim.env.gui_open
            env.step(row)
            want_pitch = minecraft.bin_to_camera(row[10]) if row[8] else 0.0
            want_yaw = minecraft.bin_to_camera(row[11]) if row[8] else 0.0
            assert sim.env.pitch == pytest.approx(np.clip(pitch + want_pitch, -90, 90), abs=1e-4)
            assert sim.env.yaw == pytest.approx((yaw + want_yaw) % 360, abs=1e-4)
            assert sim.env.gui_open == (gui != (g == 9 and v == 1))  # inventory opens/closes


def test_fake_env_frames_and_limits():
    task = TASKS["mine_block:oak_log"]
    env = make_env(task, fake=True)
    obs = env.reset()
    assert obs["image"].shape == (360, 640, 3) and obs["instruction"] == "mine oak log"
    turn = _groups(camera_flag=1, yaw=15)
    o1, _, term, _, info = env.step(np.stack([turn] * 4))
    assert not term and not info["success"] and not np.array_equal(o1["image"], obs["image"])
    env.step(np.stack([ATTACK] * 4))
    _, r, term, _, info = env.step(np.stack([ATTACK] * 4))  # 8th attack tick: the goal
    assert term and info["success"] and r == 1.0
    again = make_env(task, fake=True)
    again.reset()
    np.testing.assert_array_equal(again.step(np.stack([turn] * 4))[0]["image"], o1["image"])
    with pytest.raises(ValueError, match="at most 4"):
        env.step(np.stack([NOOP] * 5))
    two = make_env(task, fake=True, actions_per_decision=2)
    two.reset()
    with pytest.raises(ValueError, match="at most 2"):
        two.step(np.stack([NOOP] * 3))


def test_bad_rows_are_clear():
    task = TASKS["craft_item:stone_axe"]
    bad = type(task)(**{**task.__dict__, "spawn": {**task.spawn, "init_inventory": ("stick=2",)}})
    with pytest.raises(ValueError, match=r"craft_item:stone_axe.*stick=2"):
        make_env(bad, fake=True)
    far = type(task)(**{**task.__dict__,
                        "spawn": {**task.spawn, "init_inventory": ("stick>=2@40",)}})
    with pytest.raises(ValueError, match="slot must be 0-35"):
        make_env(far, fake=True)
    moved = type(task)(**{**task.__dict__, "spawn": {**task.spawn, "position": (1.0, 2.0, 3.0)}})
    with pytest.raises(ValueError, match="no GUI-opening actions"):
        make_env(moved, fake=True)


def test_real_backend_missing_is_clear():
    try:
        import minestudio  # noqa: F401

        pytest.skip("minestudio is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"\[minecraft\].*Java 8.*minestudio.simulator.entry"):
        make_env(TASKS["kill_entity:sheep"])


def test_7b_config_trains_on_8_task_ids_of_the_table():
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "qwen7b", os.path.join(root, "configs", "qwen2_vl_7b_tpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = module.get_config().env.tasks
    assert len(ids) == len(set(ids)) == 8 and set(ids) <= set(TASKS)
    fams = sorted(TASKS[i].family for i in ids)
    assert fams == ["combat"] * 2 + ["embodied"] * 3 + ["gui"] * 3
