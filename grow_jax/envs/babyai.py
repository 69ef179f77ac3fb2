"""BabyAI levels (minigrid) as language tasks with RGB partial observations and an expert."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import minigrid  # noqa: F401  (importing registers the BabyAI-* levels)

from grow_jax.envs.base import Task, make_obs, select_tasks

ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
SUITE = "babyai"
# minigrid.envs.babyai submodule defining a level's class -> family reported in evaluations.
_FAMILY_OF_MODULE = {
    "goto": "GoTo",
    "open": "Open",
    "pickup": "Pickup",
    "putnext": "PutNext",
    "unlock": "Unlock",
    "other": "Other",
    "synth": "Synth",
}


def level_ids() -> list[str]:
    """All `BabyAI-*` ids registered in gymnasium (importing minigrid registers them)."""
    return [k for k in gym.registry if k.startswith("BabyAI-")]


@functools.cache
def level_family(level: str) -> str:
    """Level group (GoTo, Open, Pickup, PutNext, Unlock, Other, Synth) from the level's module."""
    if level not in gym.registry:
        raise KeyError(f"unknown BabyAI level {level!r}; known: see babyai.level_ids()")
    module_name, cls_name = gym.registry[level].entry_point.split(":")
    module = getattr(importlib.import_module(module_name), cls_name).__module__
    return _FAMILY_OF_MODULE.get(module.rsplit(".", 1)[-1], "Other")


def make_tasks(
    ids: str | Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    max_steps: int | None = None,
) -> list[Task]:
    """One task per (selected level, seed); the instruction is that seed's mission.

    ids: level ids (`BabyAI-GoToLocal-v0`), level groups (`GoTo`, `Pickup`, ...; see
    `level_family`) or "all" (None: all), as in `grow_jax.envs.base.select_tasks`.
    """
    catalog = [Task(task_id=lv, suite=SUITE, family=level_family(lv), instruction="")
               for lv in level_ids()]
    levels = [t.task_id for t in select_tasks(catalog, ids, SUITE)]
    tasks = []
    for level in levels:
        env = gym.make(level)
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            tasks.append(
                Task(
                    task_id=level,
                    suite=SUITE,
                    family=level_family(level),
                    instruction=obs["mission"],
                    seed=int(seed),
                    max_steps=max_steps,
                )
            )
        env.close()
    return tasks


def render_pov(grid, vis_mask, tile_size: int) -> np.ndarray:
    """The agent's egocentric RGB view, pixel-identical to minigrid's
    `RGBImgPartialObsWrapper`, from an already computed (grid, vis_mask) view.

    minigrid renders the view by recomputing the view grid and testing every cell with
    `np.array_equal`; reusing the grid the env step already built and a cached tile per
    cell makes a step about 2x cheaper (tests/envs check the pixels are equal).
    """
    from minigrid.core.grid import Grid

    w, h = grid.width, grid.height
    agent = (w // 2, h - 1)
    img = np.empty((h * tile_size, w * tile_size, 3), np.uint8)
    for j in range(h):
        for i in range(w):
            tile = Grid.render_tile(grid.get(i, j), agent_dir=3 if (i, j) == agent else None,
                                    highlight=bool(vis_mask[i, j]), tile_size=tile_size)
            img[j * tile_size:(j + 1) * tile_size, i * tile_size:(i + 1) * tile_size] = tile
    return img


class BabyAIEnv:
    """A BabyAI level seen through the agent's 7x7 RGB view (tile_size 8 -> 56x56), the
    frames of minigrid's `RGBImgPartialObsWrapper`."""

    action_names = ACTION_NAMES

    def __init__(self, task: Task, tile_size: int = 8):
        self.task = task
        kwargs = {} if task.max_steps is None else {"max_steps": int(task.max_steps)}
        self._env = gym.make(task.task_id, **kwargs)
        self.tile_size = tile_size
        self._mission = task.instruction
        self._bot = None
        self._last_action: int | None = None
        # The env's own step already builds the view grid (for its symbolic observation);
        # remember it so rendering the frame does not build it a second time.
        u = self._env.unwrapped
        self._view = None
        build = u.gen_obs_grid

        def gen_obs_grid(agent_view_size=None):
            self._view = build(agent_view_size)
            return self._view

        u.gen_obs_grid = gen_obs_grid

    @property
    def unwrapped(self):
        return self._env.unwrapped

    def _frame(self) -> np.ndarray:
        grid, vis = self._view
        return render_pov(grid, vis, self.tile_size)

    def reset(self, seed: int | None = None):
        seed = self.task.seed if seed is None else seed
        obs, _ = self._env.reset(seed=None if seed is None else int(seed))
        self._mission = obs["mission"]
        self._bot = None
        self._last_action = None
        return make_obs(self._frame(), self._mission)

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(ACTION_NAMES):
            raise ValueError(f"BabyAI action must be in [0, {len(ACTION_NAMES)}), got {action}")
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._last_action = action
        info = {"success": bool(terminated and reward > 0)}
        return make_obs(self._frame(), self._mission), float(reward), bool(terminated), bool(
            truncated
        ), info

    def expert_action(self) -> int:
        """Action of minigrid's BabyAIBot for the current state (told about off-plan actions)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        if self._bot is None:
            self._bot = BabyAIBot(self._env.unwrapped)
            return int(self._bot.replan())
        return int(self._bot.replan(self._last_action))

    def close(self):
        self._env.close()


def expert_action(env: BabyAIEnv) -> int:
    """The expert (BabyAIBot) action for `env`'s current state."""
    return env.expert_action()


def make_env(task: Task, tile_size: int = 8, **unused) -> BabyAIEnv:
    """Builds the env of a BabyAI task; `tile_size` 8 gives 56x56 frames, 4 gives 28x28."""
    del unused
    return BabyAIEnv(task, tile_size=tile_size)
