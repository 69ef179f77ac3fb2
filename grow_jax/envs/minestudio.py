"""MineStudio backend of the Minecraft suite: OpenHA task set-up, goal reward and success.

One `MinecraftEnv` owns one `minestudio.simulator.MinecraftSim` (action_type "env", 640x360
frames) built with the task's world seed, and two callbacks on MineStudio's interface
(`before_reset / after_reset / before_step / after_step`, called by the simulator itself):

- `TaskSetupCallback.after_reset` issues the episode's chat commands through
  `sim.env.execute_cmd` in OpenHA's order (inventory, teleport, the row's commands, mobs) and
  waits for the inventory to arrive; `MinecraftEnv.reset` then steps the GUI-opening actions
  of the task's `needs` (or, for a craft task without needs, opens the inventory).
- `GoalRewardCallback.after_step` reads MineStudio's per-event statistics in `info`
  (`mine_block`, `craft_item` (smelting counts there too, as in OpenHA), `kill_entity`,
  `custom` for `interact_with_*`) and pays reward 1 the first time the goal's count rises in an
  episode (OpenHA's `max_reward_times = 1`); the episode then terminates with success.

The episode seed given to `reset` draws the set-up choices (tool, random slots, mob offsets);
the world itself is always the task's seed, since its spawn position belongs to that world.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grow_jax.envs.base import Task, make_obs
from grow_jax.envs.minecraft import BASES, groups_to_minerl, noop_groups

FRAME_WH = (640, 360)  # MineStudio's (width, height) for render_size and obs_size
SETTLE_TICKS = 30  # no-op ticks after the commands (OpenHA's CommandsCallback waits 30)
MAX_SETTLE_TICKS = 300  # give up waiting for the inventory after this many ticks
INVENTORY_SLOTS = 36  # 0-8 hotbar, 9-35 main inventory
EMPTY_HAND = ("-", "air")
# Reward event in MineStudio's info for each spawn file (smelted items count as crafted).
EVENTS = {
    "mine_block": "mine_block",
    "craft_item": "craft_item",
    "smelt_item": "craft_item",
    "kill_entity": "kill_entity",
    "interact_block": "custom",
}
# GUI-opening actions (OpenHA's open_gui_actions.json), per need and (world seed, position):
# (ticks, pressed keys, camera [pitch, yaw] degrees) runs.
_GUI_WORLD = (1, (-1838.0, 72.0, 30501.0))
_GUI_OPEN = {
    ("need_crafting_table", _GUI_WORLD): ((1, ("hotbar.1",), None), (1, (), None),
                                          (1, (), (30.0, -30.0)), (2, ("use",), None),
                                          (11, (), None)),
    ("need_furnace", _GUI_WORLD): ((1, ("hotbar.1",), None), (1, (), None),
                                   (1, (), (30.0, 30.0)), (1, ("use",), None),
                                   (1, ("use", "inventory"), None), (11, (), None)),
    ("inventory", None): ((1, ("inventory",), None), (9, (), None)),
}  # fmt: skip
_ITEM_RE = re.compile(r"^([a-z0-9_]+)(>=|>)(\d+)(?:@(\d+))?$")
_FAST_RESET_COMMANDS = ("/kill", "/clear", "/time set 0", "/weather clear",
                        "/kill @e[type=!player]", "/kill @e[type=item]")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EpisodeSetup:
    """What one episode of a task starts with.

    commands: chat commands, in the order they are issued after the simulator's reset.
    init_actions: env-format actions stepped before the first decision (opening a GUI).
    event, goal: the MineStudio info statistic and key whose first increase is the success.
    inventory: slot -> (item, count) the commands place (the main hand is slot 0).
    """

    commands: tuple[str, ...]
    init_actions: tuple[dict, ...]
    event: str
    goal: str
    inventory: Mapping[int, tuple[str, int]]


def parse_item(spec: str, where: str) -> tuple[str, int, int | None]:
    """'prismarine>=3' -> ('prismarine', 3, None); 'oak_planks>3@14' -> ('oak_planks', 4, 14)."""
    m = _ITEM_RE.match(spec)
    if m is None:
        raise ValueError(f"{where}: init_inventory item {spec!r} is not ITEM>=N, ITEM>N or "
                         "either with @SLOT")  # fmt: skip
    name, op, n, slot = m.groups()
    if slot is not None and not 0 <= int(slot) < INVENTORY_SLOTS:
        raise ValueError(f"{where}: init_inventory item {spec!r}: slot must be 0-35")
    return name, int(n) + (op == ">"), None if slot is None else int(slot)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def noop_action() -> dict:
    return groups_to_minerl(noop_groups())


def _gui_actions(runs) -> tuple[dict, ...]:
    out = []
    for ticks, keys, camera in runs:
        act = noop_action()
        for k in keys:
            act[k] = 1
        if camera is not None:
            act["camera"] = np.asarray(camera, np.float32)
        out += [act] * ticks
    return tuple(out)


def episode_setup(task: Task, seed: int | None) -> EpisodeSetup:
    """The commands, GUI actions and goal of one episode of `task`; `seed` (default: the task's
    seed) draws the tool, the random inventory slots and the mob's offset, so a GRPO group that
    shares a seed shares its start."""
    s = task.spawn
    where = f"Minecraft task {task.task_id!r}"
    kind = s["spawn_file"]
    if kind not in EVENTS:
        raise ValueError(f"{where}: spawn_file {kind!r} is not one of {sorted(EVENTS)}")
    seed = task.seed if seed is None else seed
    rng = np.random.default_rng([0 if seed is None else int(seed) % 2**63,
                                 zlib.crc32(task.task_id.encode())])  # fmt: skip
    inventory: dict[int, tuple[str, int]] = {}
    tools = [t for t in s["tools"] if t != "-"] or list(s["tools"])
    if tools:
        tool = tools[int(rng.integers(len(tools)))]
        if tool not in EMPTY_HAND:
            inventory[0] = (tool, 1)
    items = [parse_item(i, where) for i in s["init_inventory"]]
    free = set(range(INVENTORY_SLOTS)) - {slot for _, _, slot in items if slot is not None}
    if kind in ("smelt_item", "interact_block") or s["needs"] == "need_crafting_table":
        free.discard(0)  # the GUI-opening actions select hotbar slot 1 (OpenHA's forbidden_slots)
    free -= set(inventory)
    for name, count, slot in items:
        if slot is None:
            if not free:
                raise ValueError(f"{where}: no free inventory slot for {name}")
            slot = int(rng.choice(sorted(free)))
            free.discard(slot)
        inventory[slot] = (name, count)
    commands = ["/gamerule sendCommandFeedback false"]
    commands += [f"/replaceitem entity @p {_slot_name(k)} minecraft:{name} {n}"
                 for k, (name, n) in inventory.items()]  # fmt: skip
    if s["position"]:
        commands.append("/tp @s " + " ".join(_fmt(v) for v in s["position"]))
    commands += list(s.get("commands", ()))
    if kind == "kill_entity":
        x, z = rng.uniform(-1.0, 1.0), rng.uniform(2.0, 7.0)
        commands.append(f"/execute as @p at @p run summon minecraft:{s['goal']} "
                        f"~{x:.2f} ~3 ~{z:.2f} {{Age:0}}")  # fmt: skip
    need = s["needs"] or ("inventory" if kind == "craft_item" else "")
    init_actions: tuple[dict, ...] = ()
    if need:
        world = None if need == "inventory" else (task.seed, tuple(s["position"]))
        runs = _GUI_OPEN.get((need, world))
        if runs is None:
            raise ValueError(f"{where}: no GUI-opening actions for needs={need!r} at world seed "
                             f"{task.seed} position {s['position']}; known: "
                             f"{sorted({k[1] for k in _GUI_OPEN if k[1]})}")  # fmt: skip
        init_actions = _gui_actions(runs)
    return EpisodeSetup(tuple(commands), init_actions, EVENTS[kind], s["goal"], inventory)


def _slot_name(slot: int) -> str:
    """Inventory index -> /replaceitem slot (0 = the main hand, 1-8 hotbar, 9-35 inventory)."""
    if slot == 0:
        return "weapon.mainhand"
    return f"hotbar.{slot}" if slot < 9 else f"inventory.{slot - 9}"


def stat(info: Mapping[str, Any], event: str, key: str) -> float:
    """Count of `key` in MineStudio's per-event statistics (0 when absent)."""
    v = (info.get(event) or {}).get(key, 0)
    return float(np.asarray(v).item())


# ---------------------------------------------------------------- callbacks


class _Callback:
    """No-op versions of every hook MinecraftSim calls (MineStudio's MinecraftCallback)."""

    def before_reset(self, sim, reset_flag: bool) -> bool:
        return reset_flag

    def after_reset(self, sim, obs, info):
        return obs, info

    def before_step(self, sim, action):
        return action

    def after_step(self, sim, obs, reward, terminated, truncated, info):
        return obs, reward, terminated, truncated, info

    def before_close(self, sim):
        pass

    def after_close(self, sim):
        pass

    def before_render(self, sim, image):
        return image

    def after_render(self, sim, image):
        return image


class TaskSetupCallback(_Callback):
    """MineStudio callback: applies `self.setup` (set by `MinecraftEnv.reset`) after a reset.

    With `fast_reset`, resets after the first are done by commands (kill, clear inventory,
    time, weather, remove mobs and items) instead of regenerating the world: much faster, but
    blocks the previous episode mined or placed stay changed.
    """

    def __init__(self, fast_reset: bool = False):
        self.fast_reset = fast_reset
        self.setup: EpisodeSetup | None = None

    def before_reset(self, sim, reset_flag: bool) -> bool:
        if not (self.fast_reset and sim.already_reset):
            return reset_flag
        for cmd in _FAST_RESET_COMMANDS:
            sim.env.execute_cmd(cmd)
        return False

    def after_reset(self, sim, obs, info):
        if self.setup is None:
            raise RuntimeError("TaskSetupCallback.setup must be set before the simulator resets")
        for cmd in self.setup.commands:
            raw, _, _, info = sim.env.execute_cmd(cmd)
        want = {name for name, _ in self.setup.inventory.values()}
        for tick in range(MAX_SETTLE_TICKS):
            raw, _, _, info = sim.env.step(sim.env.noop_action())
            have = {str(v.get("type", "")).removeprefix("minecraft:")
                    for v in (raw.get("inventory") or {}).values()}
            if tick + 1 >= SETTLE_TICKS and want <= have:
                break
        return sim._wrap_obs_info(raw, info)


class GoalRewardCallback(_Callback):
    """MineStudio callback: reward 1 (and `success`) the first time `info[event][goal]` rises
    in an episode, 0 otherwise; it replaces the simulator's own reward, as MineStudio's
    RewardsCallback with max_reward_times=1 does."""

    def __init__(self, event: str, goal: str):
        self.event, self.goal = event, goal
        self.success = False
        self._prev = 0.0

    def after_reset(self, sim, obs, info):
        self._prev, self.success = stat(info, self.event, self.goal), False
        return obs, info

    def after_step(self, sim, obs, reward, terminated, truncated, info):
        now = stat(info, self.event, self.goal)
        reward = 0.0
        if now > self._prev and not self.success:
            reward, self.success = 1.0, True
        self._prev = now
        return obs, reward, terminated, truncated, info


# ---------------------------------------------------------------- env


def make_minestudio_sim(seed: int, callbacks: Sequence[Any], obs_size: tuple[int, int] = FRAME_WH):
    """A real `MinecraftSim`: env-style actions, world `seed`, the game rendered at 640x360 and
    resized to `obs_size` (width, height)."""
    try:
        from minestudio.simulator import MinecraftSim
        from minestudio.utils import get_mine_studio_dir
    except ImportError as e:
        raise ImportError(
            "the Minecraft suite needs MineStudio: `pip install -e \".[minecraft]\"`, Java 8 "
            "(a JDK) and, once, `python -m minestudio.simulator.entry -y` to download the "
            "engine (see BUILD.md, Minecraft). Tests use --config.env.kwargs.fake=True."
        ) from e
    jar = os.path.join(get_mine_studio_dir(), "engine", "build", "libs", "mcprec-6.13.jar")
    if not os.path.exists(jar):
        raise FileNotFoundError(f"MineStudio's engine is missing ({jar}): run "
                                "`python -m minestudio.simulator.entry -y` once to download it")
    return MinecraftSim(action_type="env", obs_size=tuple(obs_size), render_size=FRAME_WH,
                        seed=seed, callbacks=list(callbacks))  # fmt: skip


class MinecraftEnv:
    """A Minecraft task on a MineStudio-style simulator, as a grow_jax Env.

    Actions are [k, 12] JARVIS-VLA group values (k <= actions_per_decision), each row one
    50 ms simulator step; the decision's reward is the sum over its steps and it stops early
    at success. `make_sim(world_seed, callbacks)` builds the simulator (default: the real one).
    """

    def __init__(self, task: Task, make_sim: Callable[..., Any] | None = None,
                 actions_per_decision: int = 4, fast_reset: bool = False,
                 default_max_steps: int = 300):  # fmt: skip
        if actions_per_decision < 1:
            raise ValueError(f"actions_per_decision must be >= 1, got {actions_per_decision}")
        self.task = task
        self.actions_per_decision = actions_per_decision
        self._n_groups = len(BASES)
        self._max_steps = task.max_steps or default_max_steps
        self._setup_cb = TaskSetupCallback(fast_reset)
        first = episode_setup(task, None)  # validates the row before the game starts
        self._reward_cb = GoalRewardCallback(first.event, first.goal)
        world = 0 if task.seed is None else int(task.seed)
        self.sim = (make_sim or make_minestudio_sim)(world, [self._setup_cb, self._reward_cb])
        self.last_setup: EpisodeSetup | None = None

    def reset(self, seed: int | None = None):
        self.last_setup = self._setup_cb.setup = episode_setup(self.task, seed)
        obs, _ = self.sim.reset()
        for act in self.last_setup.init_actions:
            obs, *_ = self.sim.step(dict(act))
        self._steps = 0
        return make_obs(obs["image"], self.task.instruction)

    def step(self, action):
        rows = np.asarray(action, np.int64).reshape(-1, self._n_groups)
        if rows.shape[0] > self.actions_per_decision:
            raise ValueError(f"at most {self.actions_per_decision} low-level actions per "
                             f"decision, got {rows.shape[0]}")  # fmt: skip
        total, done, obs = 0.0, False, None
        for row in rows:
            obs, reward, term, trunc, _ = self.sim.step(groups_to_minerl(row))
            total += float(reward)
            done = bool(term or trunc)
            if done or self._reward_cb.success:
                break
        self._steps += 1
        success = self._reward_cb.success
        terminated = bool(success or done)
        truncated = bool(not terminated and self._steps >= self._max_steps)
        return (make_obs(obs["image"], self.task.instruction), total, terminated, truncated,
                {"success": success})  # fmt: skip

    def close(self):
        self.sim.close()
