"""A fault-injecting env for the reliability tests: wraps a real env and, on chosen seeds,
raises, crashes its process or hangs at a chosen step (0: at reset)."""

from __future__ import annotations

import os
import time

from grow_jax.envs import make_env


class FaultyEnv:
    def __init__(self, env, fault: str, fault_seeds, fault_step: int):
        self.env, self.task = env, env.task
        self.fault, self.fault_seeds, self.fault_step = fault, set(fault_seeds), fault_step
        self.seed, self.t = None, 0

    def _maybe_fault(self):
        if self.seed not in self.fault_seeds or self.t != self.fault_step:
            return
        if self.fault == "raise":
            raise RuntimeError(f"injected fault at seed {self.seed} step {self.t}")
        if self.fault == "crash":
            os._exit(3)
        if self.fault == "hang":
            time.sleep(3600)

    def reset(self, seed=None):
        self.seed, self.t = seed, 0
        self._maybe_fault()
        return self.env.reset(seed)

    def step(self, action):
        self.t += 1
        self._maybe_fault()
        return self.env.step(action)

    def close(self):
        self.env.close()


def make_faulty_env(task, *, fault="raise", fault_seeds=(), fault_step=1, **kwargs):
    return FaultyEnv(make_env(task, **kwargs), fault, fault_seeds, fault_step)
