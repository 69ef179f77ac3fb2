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
from grow_jax.envs.pool import EnvFaultLimit, EnvWorkerError

FAULT_POLICIES = ("raise", "drop", "fail")
STARTUP_S = 120.0  # shortest wait for an actor's start-up (it imports the suite)


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
                      fault_policy=e.fault_policy, max_faults_in_a_row=e.max_faults_in_a_row)


class _Fault(Exception):
    """Internal: the envs of one actor lost their state (reason in args[0])."""


def _last_line(text: Any) -> str:
    lines = [x.strip() for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else "unknown error"


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


class RayEnvPool:
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
    ):
        if fault_policy not in FAULT_POLICIES:
            raise ValueError(f"RayEnvPool fault_policy must be one of {FAULT_POLICIES}, "
                             f"got {fault_policy!r}")
        if not tasks:
            raise ValueError("RayEnvPool needs at least one task")
        if num_actors is not None and num_actors < 1:
            raise ValueError(f"RayEnvPool num_actors (env.ray_actors) must be >= 1 or None, "
                             f"got {num_actors}")
        if not num_cpus > 0:
            raise ValueError(f"RayEnvPool num_cpus (env.ray_actor_cpus) must be > 0, "
                             f"got {num_cpus}")
        self._ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        self.tasks = list(tasks)
        self.timeout_s = timeout_s
        self.fault_policy = fault_policy
        self.max_faults_in_a_row = max_faults_in_a_row
        self.num_faults = 0
        self._closed = False
        n = len(self.tasks)
        self._in_a_row = [0] * n
        self._seeds: list[int | None] = [None] * n  # of each env's last reset (for messages)
        self._needs_reset: set[int] = set()
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
    def num_envs(self) -> int:
        return len(self.tasks)

    @property
    def worker_pids(self) -> list[int]:
        """The actors' process ids (on their nodes)."""
        return list(self._pids)

    def reset(
        self, seeds: Sequence[int | None] | None = None, indices: Sequence[int] | None = None
    ) -> list[Obs]:
        """Resets envs `indices` (default all) with `seeds` (None: each task's seed)."""
        indices = self._indices(indices)
        seeds = [None] * len(indices) if seeds is None else list(seeds)
        if len(seeds) != len(indices):
            raise ValueError(f"reset got {len(seeds)} seeds for {len(indices)} envs")
        seeds = [None if s is None else int(s) for s in seeds]
        for i, s in zip(indices, seeds):
            self._seeds[i] = s if s is not None else self.tasks[i].seed
        out = self._run("reset", dict(zip(indices, seeds)))
        return [None if isinstance(o, _Fault) else _own(o) for o in out]

    def step(self, actions: Sequence[Any], indices: Sequence[int] | None = None):
        """Steps envs `indices` (default all); returns (obs list, rewards, terminated,
        truncated, infos) in the order of `indices`."""
        indices = self._indices(indices)
        if len(actions) != len(indices):
            raise ValueError(f"step got {len(actions)} actions for {len(indices)} envs")
        results = self._run("step", dict(zip(indices, actions)))
        for k, (i, res) in enumerate(zip(indices, results)):
            if isinstance(res, _Fault):
                results[k] = (None, 0.0, False, True, {"success": False, "env_fault": res.args[0]})
            else:
                results[k] = (_own(res[0]), *res[1:])
                if res[2] or res[3]:
                    self._in_a_row[i] = 0  # a finished episode ends a run of faults
        obs, rew, term, trunc, infos = zip(*results)
        return (
            list(obs),
            np.asarray(rew, np.float32),
            np.asarray(term, bool),
            np.asarray(trunc, bool),
            list(infos),
        )

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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

    def _indices(self, indices: Sequence[int] | None) -> list[int]:
        if self._closed:
            raise EnvWorkerError("RayEnvPool is closed")
        if indices is None:
            return list(range(self.num_envs))
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < self.num_envs]
        if bad or len(set(indices)) != len(indices):
            raise ValueError(f"env indices must be distinct and in [0, {self.num_envs}): {indices}")
        return indices

    def _run(self, cmd: str, args: dict[int, Any]) -> list[Any]:
        """Results in the order of `args`; with restarts on, faulted envs give a `_Fault`."""
        if cmd == "reset":
            self._needs_reset.difference_update(args)
            merged = {}
        else:
            merged = {i: _Fault("env was restarted after a fault and not reset since")
                      for i in args if i in self._needs_reset}
        per_actor: dict[int, dict[int, Any]] = {}
        for i, arg in args.items():
            if i not in merged:
                per_actor.setdefault(self._owner[i], {})[i] = arg
        refs = {k: self._actors[k].run.remote(cmd, payload) for k, payload in per_actor.items()}
        for k, r in self._gather(refs, cmd).items():
            merged.update(dict.fromkeys(per_actor[k], r) if isinstance(r, _Fault) else r)
        for i, r in merged.items():
            if isinstance(r, _Fault):
                self._count_fault(i, r.args[0])
        return [merged[i] for i in args]

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
        head, _, tb = reason.partition("\n")
        why = f"{head.rstrip(':')}: {_last_line(tb)}" if tb else head
        return _Fault(f"env actor {k} (pid {old}) {why}; restarted")

    def _count_fault(self, i: int, reason: str) -> None:
        self.num_faults += 1
        self._in_a_row[i] += 1
        if self.max_faults_in_a_row and self._in_a_row[i] >= self.max_faults_in_a_row:
            self.close(graceful=False)
            raise EnvFaultLimit(
                f"env {i} (task {self.tasks[i].task_id!r}, seed {self._seeds[i]}) faulted "
                f"{self._in_a_row[i]} times in a row (env.max_faults_in_a_row="
                f"{self.max_faults_in_a_row}); last: {reason}")

    def _fail(self, k: int, reason: str) -> None:
        envs = ", ".join(f"{i}:{self.tasks[i].task_id}" for i in self._blocks[k])
        msg = f"env actor {k} (pid {self._pids[k]}) running envs [{envs}] {reason}"
        self.close(graceful=False)
        raise EnvWorkerError(msg)
