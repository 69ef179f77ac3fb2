"""Crafter: one language task per achievement; success ends the episode."""

from __future__ import annotations

import collections
import copy
from collections.abc import Sequence

import numpy as np

from grow_jax.envs.base import Task, make_obs, select_tasks, selection_names

SUITE = "crafter"
DEFAULT_MAX_STEPS = 1000
ACTION_NAMES = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling",
    "collect_stone", "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant",
    "make_iron_pickaxe", "make_iron_sword", "make_stone_pickaxe", "make_stone_sword",
    "make_wood_pickaxe", "make_wood_sword", "place_furnace", "place_plant", "place_stone",
    "place_table", "wake_up",
)  # fmt: skip
WORLD_CACHE_SIZE = 256  # generated worlds kept per process (a GROW group shares its world)
_WORLDS: collections.OrderedDict = collections.OrderedDict()
_SURVIVE = {"collect_drink", "eat_cow", "eat_plant", "wake_up"}
_INSTRUCTION_OVERRIDES = {"collect_drink": "drink water"}


def achievement_family(name: str) -> str:
    """collect / place / make / defeat / survive (eat, drink, sleep -> wake_up)."""
    if name in _SURVIVE:
        return "survive"
    return name.split("_", 1)[0]


def achievement_instruction(name: str) -> str:
    return _INSTRUCTION_OVERRIDES.get(name, name.replace("_", " "))


def make_tasks(
    ids: str | Sequence[str] | None = None,
    seeds: Sequence[int | None] = (0,),
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[Task]:
    """One task per (selected achievement, world seed).

    ids: task ids (`crafter:collect_wood`, or just `collect_wood`), categories (`collect`,
    `place`, `make`, `defeat`, `survive`) or "all" (None: all), as in
    `grow_jax.envs.base.select_tasks`.
    """
    names = [f"{SUITE}:{n}" if n in ACHIEVEMENTS else n for n in selection_names(ids)]
    tasks = [
        Task(
            task_id=f"{SUITE}:{name}",
            suite=SUITE,
            family=achievement_family(name),
            instruction=achievement_instruction(name),
            seed=seed,
            max_steps=max_steps,
            spawn={"achievement": name},
        )
        for name in ACHIEVEMENTS
        for seed in seeds
    ]
    return select_tasks(tasks, names, SUITE)


class CrafterEnv:
    """Crafter with the task reward: 1.0 on the step the task's achievement is first unlocked.

    Crafter's own (dense) reward is kept in ``info["env_reward"]``.
    """

    action_names = ACTION_NAMES

    def __init__(self, task: Task, size: int = 64):
        import crafter

        self.task = task
        self._achievement = task.spawn["achievement"]
        max_steps = task.max_steps or DEFAULT_MAX_STEPS
        self._env = crafter.Env(size=(size, size), length=max_steps, seed=task.seed or 0)
        self._max_steps = max_steps
        self._expert = None

    def reset(self, seed: int | None = None):
        seed = self.task.seed if seed is None else seed
        # crafter seeds episode k of a world with hash((seed, k)): restart the count at 0.
        seed = int(seed) if seed is not None else int(np.random.randint(2**31 - 1))
        self._expert = None
        return make_obs(_reset_world(self._env, seed), self.task.instruction)

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(ACTION_NAMES):
            raise ValueError(f"Crafter action must be in [0, {len(ACTION_NAMES)}), got {action}")
        obs, env_reward, done, info = self._env.step(action)
        success = info["achievements"][self._achievement] > 0
        truncated = bool(done and not success and self._env._step >= self._max_steps)
        terminated = bool(success or (done and not truncated))
        info = {"success": bool(success), "env_reward": float(env_reward)}
        return make_obs(obs, self.task.instruction), float(success), terminated, truncated, info

    def expert_action(self) -> int:
        """Action of the scripted expert (`crafter_expert.CrafterExpert`) for this state."""
        if self._expert is None:
            from grow_jax.envs.crafter_expert import CrafterExpert

            self._expert = CrafterExpert(self._env, self._achievement)
        return self._expert.act()

    def close(self):
        pass


def _reset_world(env, seed: int) -> np.ndarray:
    """`env.reset()` into world `seed` (crafter seeds episode k of a world with
    hash((seed, k)): the count restarts at 0, so a seed is always the same world).

    Generating a world is seconds of Python noise (less with numba, the `fast` extra); the
    generated state (world and player, RNG included) is kept per seed in a process-wide
    LRU and restored by a deep copy, so the G episodes of a group and repeated evaluation
    seeds generate it once (tests/envs check a restored episode plays as a generated one)."""
    key = (seed, tuple(env._area))
    snap = _WORLDS.get(key)
    if snap is None:
        env._seed, env._episode = seed, 0
        obs = env.reset()
        _WORLDS[key] = copy.deepcopy((env._world, env._player))
        while len(_WORLDS) > WORLD_CACHE_SIZE:
            _WORLDS.popitem(last=False)
        return obs
    _WORLDS.move_to_end(key)
    world, player = snap
    memo = {id(world): env._world}  # objects point at the live world, not the snapshot
    state = copy.deepcopy(world.__dict__, memo)
    env._world.__dict__.clear()
    env._world.__dict__.update(state)
    env._seed, env._episode, env._step = seed, 1, 0
    env._player = copy.deepcopy(player, memo)
    env._update_time()
    env._last_health = env._player.health
    env._unlocked = set()
    return env._obs()


def make_env(task: Task, size: int = 64, **unused) -> CrafterEnv:
    del unused
    return CrafterEnv(task, size=size)
