"""Environments: the Task/Env contract, task suites (babyai, crafter, minecraft) and EnvPool.

`make_env(task, **kw)` and `make_tasks(suite, **kw)` dispatch on the suite name; suite modules
are imported on first use so that importing grow_jax.envs stays cheap.
"""

from __future__ import annotations

import importlib

from grow_jax.envs.base import Env, Obs, Task, make_obs

SUITES = ("babyai", "crafter", "minecraft")

__all__ = ["SUITES", "Env", "Obs", "Task", "make_env", "make_obs", "make_tasks", "suite_module"]


def suite_module(suite: str):
    if suite not in SUITES:
        raise KeyError(f"unknown env suite {suite!r}; expected one of {SUITES}")
    return importlib.import_module(f"grow_jax.envs.{suite}")


def make_env(task: Task, **kwargs) -> Env:
    """Builds the env of `task` with suite options (tile_size, size, fake, ...); options that
    a suite does not use are ignored, so one kwargs dict can serve a mixed pool."""
    return suite_module(task.suite).make_env(task, **kwargs)


def make_tasks(suite: str, **kwargs) -> list[Task]:
    return suite_module(suite).make_tasks(**kwargs)
