"""RayEnvPool: the `EnvPool` interface with the envs stepped in Ray actors (``grow_jax[ray]``).

Heavy envs (Minecraft: a JVM each) do not fit many to a host; GROW's released evaluation
drives them as a Ray worker pool. Selected with ``--config.env.pool_mode=ray``.

Layout: the envs are split into `num_actors` contiguous blocks, as EnvPool's async workers;
each actor builds its block with `make_env` and steps it in index order, so a reset/step
gives what the in-process pool gives for the same seeds and actions. An actor reserves
`num_cpus` (default 0.5, so a 2-core machine hosts 4). Observations arrive as private,
writable copies (never views of Ray's object store).

Cluster: a Ray session already started in this process is used as it is; otherwise
``ray.init(address)``, where None connects to ``RAY_ADDRESS`` if set and else starts a local
cluster. Every node needs grow_jax and the suite's extras installed. The pool kills its
actors on `close` but leaves the session up (other pools may share it).

Faults (the contract of EnvPool's restart policy, docs/reliability.md):

- every reset/step waits for its actors with ``ray.wait(timeout=timeout_s)`` (start-up: at
  least `STARTUP_S`); an actor that died, whose env raised, or that did not answer in time
  has faulted;
- ``fault_policy="raise"``: an `EnvWorkerError` naming the actor, its envs and tasks and the
  reason; the pool closes;
- "drop" / "fail": the actor is killed (``ray.kill``) and replaced by a fresh one with fresh
  envs for its whole block, and the call returns. Every env of the call on that actor is a
  *faulted result*: `step` gives obs None, reward 0, terminated False, truncated True and
  ``info["env_fault"]`` (one line); `reset` gives obs None. An env of a restarted block must
  be reset before its next step (a step without one is again a faulted result).
  `num_faults` counts faulted results; the caller reads `fault_policy` to drop the episode
  or keep it as a failure;
- an env that faults `max_faults_in_a_row` times without finishing an episode in between
  raises `EnvFaultLimit` (naming the env, task and seed of its last reset) and the pool
  closes; 0 never stops.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grow_jax.envs import make_env
from grow_jax.envs.base import Obs, Task
from grow_jax.envs.pool import STARTUP_S, _Fault, _last_line, _PoolBase, _restarted

# STARTUP_S is also the shortest wait for an actor's start-up (it imports the suite)


def import_ray():
    """The `ray` module, or an ImportError that names the extra to install."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("env.pool_mode='ray' needs Ray: pip install -e \".[ray]\" "
                          "(the grow_jax[ray] extra)") from e
    return ray


def ray_pool_from_config(tasks: Sequence[Task], env_config) -> RayEnvPool:
    """The RayEnvPool that `config.env` (pool_mode "ray", ray_* keys, fault policy) describes."""
    from grow_jax.envs.pool import env_kwargs_from_config

    e = env_config
    return RayEnvPool(tasks, env_kwargs=env_kwargs_from_config(e), num_actors=e.ray_actors,
                      num_cpus=e.ray_actor_cpus, address=e.ray_address, timeout_s=e.timeout_s,
                      fault_policy=e.fault_policy, max_faults_in_a_row=e.max_faults_in_a_row,
                      pipeline=e.pipeline)


def _own(obs: Obs) -> Obs:
    """A copy of `obs` whose arrays are writable and owned (not in Ray's object store)."""
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in obs.items()}


class _EnvActor:
    """One Ray actor: builds the envs of its block and resets/steps them in index order."""

    def __init__(self, tasks: dict[int, Task], env_kwargs: Mapping[str, Any]):
        self._envs = {i: make_env(t, **env_kwargs) for i, t in tasks.items()}

    def ready(self):
        return "ok", os.getpid()

    def run(self, cmd: str, payload: dict[int, Any]):
        out = {}
        for i, arg in payload.items():
            try:
                env = self._envs[i]
                out[i] = env.reset(arg) if cmd == "reset" else env.step(arg)
            except Exception:  # noqa: BLE001 - reported to the pool, which names env and task
                return "error", (i, traceback.format_exc())
        return "ok", out

    def close(self):
        for env in self._envs.values():
            env.close()


class RayEnvPool(_PoolBase):
    """Steps `len(tasks)` envs (env i runs tasks[i]) in Ray actors; EnvPool's interface.

    Args:
      tasks: one task per env.
      env_kwargs: suite options passed to every env (tile_size, size, fake, ...).
      num_actors: actors (default: min(num envs, cluster CPUs)).
      num_cpus: CPUs each actor reserves (fractions allowed).
      timeout_s: longest wait for a reset/step answer (start-up: at least STARTUP_S).
      fault_policy: "raise", "drop" or "fail" (see the module docstring).
      max_faults_in_a_row: faults of one env without a finished episode in between before
        the pool gives up; 0 never stops.
      address: Ray cluster to join if no session is running (None: RAY_ADDRESS or local).
      pipeline: the rollout loop overlaps stepping half the envs with sampling the other
        half (see `grow_jax.envs.pool`).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        env_kwargs: Mapping[str, Any] | None = None,
        num_actors: int | None = None,
        num_cpus: float = 0.5,
        timeout_s: float = 300.0,
        fault_policy: str = "raise",
        max_faults_in_a_row: int = 3,
        address: str | None = None,
        pipeline: bool = False,
    ):
        self._check_args(tasks, fault_policy)
        if num_actors is not None and num_actors < 1:
            raise ValueError(f"RayEnvPool num_actors (env.ray_actors) must be >= 1 or None, "
                             f"got {num_actors}")
        if not num_cpus > 0:
            raise ValueError(f"RayEnvPool num_cpus (env.ray_actor_cpus) must be > 0, "
                             f"got {num_cpus}")
        self._ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        self._init_faults(tasks, timeout_s, fault_policy, max_faults_in_a_row)
        self.pipeline = bool(pipeline)
        n = len(self.tasks)
        self._env_kwargs = dict(env_kwargs or {})
        if num_actors is None:
            num_actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        num_actors = min(n, num_actors)
        self._cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(_EnvActor)
        self._blocks = [list(map(int, b)) for b in np.array_split(np.arange(n), num_actors)]
        self._owner = {i: k for k, block in enumerate(self._blocks) for i in block}
        self._actors = [self._spawn(k) for k in range(num_actors)]
        self._pids = [None] * num_actors
        answers = self._gather({k: a.ready.remote() for k, a in enumerate(self._actors)},
                               "start-up", restart=False)
        for k, pid in answers.items():
            self._pids[k] = pid

    @property
    def worker_pids(self) -> list[int]:
        """The actors' process ids (on their nodes)."""
        return list(self._pids)

    def close(self, graceful: bool = True) -> None:
        """Closes the envs (actors get 5 s, none if not `graceful`) and kills the actors."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        if not ray.is_initialized():  # the session is gone, and the actors with it
            return
        if graceful:
            try:
                ray.wait([a.close.remote() for a in self._actors],
                         num_returns=len(self._actors), timeout=5.0)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                pass
        for a in self._actors:
            ray.kill(a, no_restart=True)

    def __del__(self):
        if not getattr(self, "_closed", True):
            try:
                self.close(graceful=False)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    # ------------------------------------------------------------- internals

    def _spawn(self, k: int):
        block = {i: self.tasks[i] for i in self._blocks[k]}
        return self._cls.remote(block, self._env_kwargs)

    def _obs(self, obs: Obs) -> Obs:
        return _own(obs)

    def _send(self, cmd: str, args: dict[int, Any]):
        """Starts `cmd` on envs `args` on their actors."""
        per_actor: dict[int, dict[int, Any]] = {}
        for i, arg in args.items():
            per_actor.setdefault(self._owner[i], {})[i] = arg
        refs = {k: self._actors[k].run.remote(cmd, payload) for k, payload in per_actor.items()}
        self._busy.update(refs)
        return cmd, per_actor, refs

    def _receive(self, token) -> dict[int, Any]:
        """The answers of a `_send` (env index -> result or `_Fault`); a fault restarts."""
        cmd, per_actor, refs = token
        merged = {}
        if not refs:
            return merged
        try:
            got = self._gather(refs, cmd)
        finally:
            self._busy.difference_update(refs)
        for k, r in got.items():
            merged.update(dict.fromkeys(per_actor[k], r) if isinstance(r, _Fault) else r)
        return merged

    def _gather(self, refs: dict[int, Any], what: str, restart: bool = True) -> dict[int, Any]:
        """Each actor's answer; on death, error or timeout: `_fail` (raise), or with `restart`
        and a restarting policy, that actor's entry is a `_Fault`."""
        ray = self._ray
        limit = max(self.timeout_s, STARTUP_S) if what == "start-up" else self.timeout_s
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=limit)
        ready = set(ready)
        results = {}
        for k, ref in refs.items():
            if ref not in ready:
                reason = f"no answer to {what!r} within {limit:.1f} s"
            else:
                try:
                    status, payload = ray.get(ref)
                except ray.exceptions.RayError as e:
                    reason = f"died during {what!r}: {type(e).__name__}: {_last_line(e)}"
                else:
                    if status == "ok":
                        results[k] = payload
                        continue
                    i, tb = payload
                    reason = (f"raised during {what!r} in env {i} (task "
                              f"{self.tasks[i].task_id!r}):\n{tb}")
            if not restart or self.fault_policy == "raise":
                self._fail(k, reason)
            results[k] = self._restart(k, reason)
        return results

    def _restart(self, k: int, reason: str) -> _Fault:
        """Kills actor k and starts a fresh one for its block (its envs need a reset)."""
        self._ray.kill(self._actors[k], no_restart=True)
        old = self._pids[k]
        self._actors[k] = self._spawn(k)
        self._pids[k] = self._gather({k: self._actors[k].ready.remote()}, "start-up",
                                     restart=False)[k]
        self._needs_reset.update(self._blocks[k])
        return _restarted(f"env actor {k} (pid {old})", reason)

    def _fail(self, k: int, reason: str) -> None:
        self._raise_fault(f"env actor {k} (pid {self._pids[k]})", k, reason)
