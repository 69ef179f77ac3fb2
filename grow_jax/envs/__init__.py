"""Environments: the Task/Env contract, task suites (babyai, crafter, minecraft) and EnvPool.

`make_env(task, **kw)` and `make_tasks(suite, **kw)` dispatch on the suite name; suite modules
are imported on first use so that importing grow_jax.envs stays cheap.
"""

from __future__ import annotations

import importlib

from grow_jax.envs.base import Env, Obs, ResizedFrames, Task, make_obs

SUITES = ("babyai", "crafter", "minecraft")

__all__ = ["SUITES", "Env", "Obs", "Task", "make_env", "make_obs", "make_tasks", "suite_module"]


def suite_module(suite: str):
    if suite not in SUITES:
        raise KeyError(f"unknown env suite {suite!r}; expected one of {SUITES}")
    return importlib.import_module(f"grow_jax.envs.{suite}")


def make_env(task: Task, image_size: int | None = None, **kwargs) -> Env:
    """Builds the env of `task` with suite options (tile_size, size, fake, ...); options that
    a suite does not use are ignored, so one kwargs dict can serve a mixed pool.

    image_size (config env.image_size): None keeps the suite's native frames; an int
    resizes every frame so its longer side is that many pixels (`base.resize_frame`)."""
    env = suite_module(task.suite).make_env(task, **kwargs)
    return env if image_size is None else ResizedFrames(env, image_size)


def make_tasks(suite: str, **kwargs) -> list[Task]:
    return suite_module(suite).make_tasks(**kwargs)
