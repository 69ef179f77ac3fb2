"""EnvPool: N environments stepped together, in-process ("sync") or in worker processes ("async").

Async workers each own a contiguous block of envs and talk over pipes. The parent waits on
both the pipes and the process sentinels, so a worker that dies (or raises) is noticed at
once, and a stuck worker after `timeout_s`. Observations always cross as copies (pickled, or
copied by the env in sync mode).

Faults (docs/reliability.md). With ``fault_policy="raise"`` a fault is an `EnvWorkerError`
naming the envs and tasks, and the pool closes. With "drop" or "fail" the pool restarts what
faulted and the call returns normally; this is the contract any pool (e.g. a Ray pool) keeps:

- sync: an env whose reset/step raises is closed and rebuilt (a hang cannot be interrupted
  in-process: use async for that); async: a worker that died, raised or did not answer
  within `timeout_s` is killed and started again with fresh envs for its whole block;
- every env of the call that lost its state is a *faulted result*: `step` gives obs None,
  reward 0, terminated False, truncated True and ``info["env_fault"]`` (a one-line reason);
  `reset` gives obs None. A faulted env must be reset before its next step (a step without
  one is again a faulted result). `num_faults` counts faulted results;
- `fault_policy` is only read by the caller (`grow_jax.rollout.loop`): "drop" discards the
  faulted episode, "fail" keeps it as a failure;
- an env that faults `max_faults_in_a_row` times without finishing an episode in between
  raises `EnvFaultLimit` (one line naming the env, task and seed of the last reset).

Pipelining (`pipeline=True`, read by `grow_jax.rollout.loop` like `fault_policy`): the loop
steps one half of the envs (`step_async`, then `step_wait`) while it samples the other
half's actions. A worker holds one command at a time (`step_async` to a worker with one in
flight is an error), so a fault or restart never meets a second, queued command. Faults,
restarts and timeouts are those of `step` (the timeout counts from `step_wait`). In sync
mode the step runs inside `step_async` (same results, no overlap), so a sync pool ignores
`pipeline`.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import signal
import time
import weakref
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from grow_jax.envs import make_env
from grow_jax.envs.base import Obs, Task
from grow_jax.errors import RunError

FAULT_POLICIES = ("raise", "drop", "fail")
STARTUP_S = 120.0  # shortest wait for a worker's start-up answer


class EnvWorkerError(RuntimeError):
    """An env worker died, raised, or did not answer in time."""


class EnvFaultLimit(EnvWorkerError, RunError):
    """One env faulted too many times in a row: the run stops."""


class _Fault(Exception):
    """Internal: the envs of one worker lost their state (reason in args[0])."""


def _last_line(text: Any) -> str:
    lines = [x.strip() for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else "unknown error"


def _restarted(who: str, reason: str) -> _Fault:
    """The fault of a restarted worker/actor `who`: the reason's head and its traceback's last
    line."""
    head, _, tb = reason.partition("\n")
    why = f"{head.rstrip(':')}: {_last_line(tb)}" if tb else head
    return _Fault(f"{who} {why}; restarted")


class _PoolBase:
    """What EnvPool and RayEnvPool share: argument checks, index checks, reset/step on top of
    `_send`/`_receive`, and the fault bookkeeping of the restart policy (module docstring).

    A pool sets `_blocks` (the env indices of each worker), `_owner` (env index -> worker;
    empty in-process) and defines `_send(cmd, args)` (starts the work, returns a token),
    `_receive(token)` (env index -> result, or a `_Fault` for an env that lost its state) and
    `close`."""

    pipeline = False  # read by the rollout loop: step half the envs while sampling the other

    def _check_args(self, tasks: Sequence[Task], fault_policy: str) -> None:
        name = type(self).__name__
        if fault_policy not in FAULT_POLICIES:
            raise ValueError(f"{name} fault_policy must be one of {FAULT_POLICIES}, "
                             f"got {fault_policy!r}")
        if not tasks:
            raise ValueError(f"{name} needs at least one task")

    def _init_faults(self, tasks: Sequence[Task], timeout_s: float, fault_policy: str,
                     max_faults_in_a_row: int) -> None:
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
        self._busy: set[int] = set()  # workers with a command in flight

    @property
    def num_envs(self) -> int:
        return len(self.tasks)

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
        return [None if isinstance(o, _Fault) else self._obs(o) for o in out]

    def step(self, actions: Sequence[Any], indices: Sequence[int] | None = None):
        """Steps envs `indices` (default all); returns (obs list, rewards, terminated,
        truncated, infos) in the order of `indices`."""
        return self.step_wait(self.step_async(actions, indices))

    def step_async(self, actions: Sequence[Any], indices: Sequence[int] | None = None):
        """Starts `step` on envs `indices` and returns its handle for `step_wait`; their
        workers must have no command in flight."""
        indices = self._indices(indices)
        if len(actions) != len(indices):
            raise ValueError(f"step got {len(actions)} actions for {len(indices)} envs")
        return indices, self._submit("step", dict(zip(indices, actions)))

    def step_wait(self, handle):
        """What `step` returns, for the handle of a `step_async`."""
        indices, pending = handle
        results = self._collect(pending)
        for k, (i, res) in enumerate(zip(indices, results)):
            if isinstance(res, _Fault):
                results[k] = (None, 0.0, False, True, {"success": False, "env_fault": res.args[0]})
            else:
                results[k] = (self._obs(res[0]), *res[1:])
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _obs(self, obs: Obs) -> Obs:
        """An observation as the caller gets it (a pool whose obs are not private copies
        copies here)."""
        return obs

    def _indices(self, indices: Sequence[int] | None) -> list[int]:
        if self._closed:
            raise EnvWorkerError(f"{type(self).__name__} is closed")
        if indices is None:
            return list(range(self.num_envs))
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < self.num_envs]
        if bad or len(set(indices)) != len(indices):
            raise ValueError(f"env indices must be distinct and in [0, {self.num_envs}): {indices}")
        return indices

    def _run(self, cmd: str, args: dict[int, Any]) -> list[Any]:
        """Results in the order of `args`; with restarts on, faulted envs give a `_Fault`."""
        return self._collect(self._submit(cmd, args))

    def _submit(self, cmd: str, args: dict[int, Any]):
        """Starts `cmd` on envs `args`; returns what `_collect` needs."""
        busy = sorted({self._owner[i] for i in args if i in self._owner} & self._busy)
        if busy:
            raise RuntimeError(f"{type(self).__name__}: workers {busy} already have a command "
                               "in flight (step_wait it first)")
        if cmd == "reset":
            self._needs_reset.difference_update(args)
            merged = {}
        else:
            merged = {i: _Fault("env was restarted after a fault and not reset since")
                      for i in args if i in self._needs_reset}
        token = self._send(cmd, {i: a for i, a in args.items() if i not in merged})
        return list(args), merged, token

    def _collect(self, pending) -> list[Any]:
        """The results of a `_submit`, in its order; faults are counted here."""
        order, merged, token = pending
        merged.update(self._receive(token))
        for i, r in merged.items():
            if isinstance(r, _Fault):
                self._count_fault(i, r.args[0])
        return [merged[i] for i in order]

    def _count_fault(self, i: int, reason: str) -> None:
        self.num_faults += 1
        self._in_a_row[i] += 1
        if self.max_faults_in_a_row and self._in_a_row[i] >= self.max_faults_in_a_row:
            self.close(graceful=False)
            raise EnvFaultLimit(
                f"env {i} (task {self.tasks[i].task_id!r}, seed {self._seeds[i]}) faulted "
                f"{self._in_a_row[i]} times in a row (env.max_faults_in_a_row="
                f"{self.max_faults_in_a_row}); last: {reason}")

    def _raise_fault(self, who: str, k: int, reason: str) -> None:
        """Closes the pool and raises the `EnvWorkerError` of worker/actor k (named `who`)."""
        envs = ", ".join(f"{i}:{self.tasks[i].task_id}" for i in self._blocks[k])
        self.close(graceful=False)
        raise EnvWorkerError(f"{who} running envs [{envs}] {reason}")


def _worker_main(conn, tasks: dict[int, Task], env_kwargs: Mapping[str, Any],
                 env_factory=make_env) -> None:
    # The parent owns the workers' lifetime: a Ctrl-C or SIGTERM sent to the whole process
    # group must not kill them mid-iteration (the parent stops gracefully, then kills them;
    # a dead parent closes the pipe, which ends this loop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    current = None
    try:
        envs = {}
        for i, task in tasks.items():
            current = i
            envs[i] = env_factory(task, **env_kwargs)
        conn.send(("ok", None))
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            out = {}
            for i, arg in payload.items():
                current = i
                out[i] = envs[i].reset(arg) if cmd == "reset" else envs[i].step(arg)
            conn.send(("ok", out))
        for env in envs.values():
            env.close()
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        try:
            conn.send(("error", (current, traceback.format_exc())))
        except (BrokenPipeError, OSError):
            pass


class EnvPool(_PoolBase):
    """Steps `len(tasks)` envs (env i runs tasks[i]) with `make_env(task, **env_kwargs)`.

    Args:
      tasks: one task per env.
      env_kwargs: suite options passed to every env (tile_size, size, fake, ...).
      mode: "sync" (in-process) or "async" (worker processes).
      num_workers: async workers (default: min(num envs, cpu count)).
      timeout_s: longest wait for a reset/step answer (start-up: at least STARTUP_S).
      start_method: multiprocessing start method ("spawn" is safe with jax threads running).
      fault_policy: "raise" (a fault is an EnvWorkerError), or restart what faulted and let
        the caller "drop" or "fail" the episode (see the module docstring).
      max_faults_in_a_row: faults of one env without a finished episode in between before
        `EnvFaultLimit`; 0 never stops.
      env_factory: builds one env, `env_factory(task, **env_kwargs)` (picklable for async;
        tests pass a fault-injecting one).
      pipeline: the rollout loop overlaps stepping half the envs with sampling the other
        half (module docstring); off in sync mode, where a step cannot run in the background.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        env_kwargs: Mapping[str, Any] | None = None,
        mode: str = "sync",
        num_workers: int | None = None,
        timeout_s: float = 300.0,
        start_method: str = "spawn",
        fault_policy: str = "raise",
        max_faults_in_a_row: int = 3,
        env_factory=make_env,
        pipeline: bool = False,
    ):
        if mode not in ("sync", "async"):
            raise ValueError(f"EnvPool mode must be 'sync' or 'async', got {mode!r}")
        self._check_args(tasks, fault_policy)
        self._init_faults(tasks, timeout_s, fault_policy, max_faults_in_a_row)
        self.mode, self.pipeline = mode, bool(pipeline) and mode == "async"
        n = len(self.tasks)
        self._env_kwargs, self._factory = dict(env_kwargs or {}), env_factory
        self._owner: dict[int, int] = {}
        if mode == "sync":
            self._envs = [env_factory(t, **self._env_kwargs) for t in self.tasks]
            return
        num_workers = min(n, num_workers or mp.cpu_count())
        self._ctx = mp.get_context(start_method)
        self._blocks = [list(b) for b in np.array_split(np.arange(n), num_workers)]
        self._owner = {i: w for w, block in enumerate(self._blocks) for i in block}
        self._conns, self._procs = [None] * num_workers, [None] * num_workers
        for w in range(num_workers):
            self._start_worker(w)
        self._gather(list(range(num_workers)), "start-up", restart=False)
        # workers ignore SIGTERM, so close (SIGKILL) them before multiprocessing's exit hook
        ref = weakref.ref(self)
        atexit.register(lambda: (p := ref()) is not None and p.close(graceful=False))

    def _start_worker(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, {int(i): self.tasks[i] for i in self._blocks[w]}, self._env_kwargs,
                  self._factory),
            name=f"grow_jax-env-worker-{w}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._conns[w], self._procs[w] = parent, proc

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs] if self.mode == "async" else []

    def close(self, graceful: bool = True) -> None:
        """Closes the envs; workers get 5 s to exit (none if not `graceful`) and are then killed."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "sync":
            for env in self._envs:
                env.close()
            return
        if graceful:
            for conn, proc in zip(self._conns, self._procs):
                try:
                    if proc.is_alive():
                        conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + (5.0 if graceful else 0.0)
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for conn in self._conns:
            conn.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()

    # ------------------------------------------------------------- internals

    def _send(self, cmd: str, args: dict[int, Any]):
        """Sends `cmd` to the workers of envs `args` (in-process: runs it); a fault restarts."""
        merged = {}
        if self.mode == "sync":
            for i, arg in args.items():
                env = self._envs[i]
                try:
                    merged[i] = env.reset(arg) if cmd == "reset" else env.step(arg)
                except Exception as e:  # noqa: BLE001 - any env error is a fault
                    if self.fault_policy == "raise":
                        raise
                    merged[i] = self._restart_sync(i, f"raised during {cmd!r}: "
                                                      f"{type(e).__name__}: {_last_line(e)}")
            return merged, None, []
        per_worker: dict[int, dict[int, Any]] = {}
        for i, arg in args.items():
            per_worker.setdefault(self._owner[i], {})[i] = arg
        sent = []
        for w, payload in per_worker.items():
            try:
                self._conns[w].send((cmd, payload))
                sent.append(w)
            except (BrokenPipeError, OSError):
                fault = self._worker_fault(w, f"could not send {cmd!r}: worker is gone")
                merged.update({i: fault for i in payload})
        self._busy.update(sent)
        return merged, (cmd, per_worker), sent

    def _receive(self, token) -> dict[int, Any]:
        """The answers of a `_send` (env index -> result or `_Fault`)."""
        merged, what, sent = token
        if sent:
            cmd, per_worker = what
            try:
                got = self._gather(sent, cmd)
            finally:
                self._busy.difference_update(sent)
            for w, r in got.items():
                merged.update(r if not isinstance(r, _Fault) else dict.fromkeys(per_worker[w], r))
        return merged

    def _restart_sync(self, i: int, reason: str) -> _Fault:
        try:
            self._envs[i].close()
        except Exception:  # noqa: BLE001 - the env is broken already
            pass
        self._envs[i] = self._factory(self.tasks[i], **self._env_kwargs)
        self._needs_reset.add(i)
        return _Fault(f"env {i} {reason}")

    def _worker_fault(self, w: int, reason: str) -> _Fault:
        """Kills and restarts worker w (or raises under the "raise" policy)."""
        if self.fault_policy == "raise":
            self._fail(w, reason)
        proc = self._procs[w]
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        code = proc.exitcode
        self._conns[w].close()
        self._start_worker(w)
        self._gather([w], "start-up", restart=False)
        self._needs_reset.update(self._blocks[w])
        return _restarted(f"env worker {w} (pid {proc.pid}, exit code {code})", reason)

    def _gather(self, workers: list[int], what: str, restart: bool = True) -> dict[int, Any]:
        """One answer from each worker; on death, error or timeout: `_fail` (raise), or with
        `restart` and a restarting policy, that worker's entry is a `_Fault`."""
        pending = set(workers)
        results = {}
        # start-up imports the suite (seconds on a busy host): never less than STARTUP_S
        limit = max(self.timeout_s, STARTUP_S) if what == "start-up" else self.timeout_s
        deadline = time.monotonic() + limit

        def fault(w, reason):
            if not restart:
                self._fail(w, reason)
            results[w] = self._worker_fault(w, reason)
            pending.discard(w)

        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for w in sorted(pending):
                    fault(w, f"no answer to {what!r} within {limit:.1f} s")
                break
            handles = {self._conns[w]: w for w in pending}
            handles.update({self._procs[w].sentinel: w for w in pending})
            for ready in wait(list(handles), timeout=min(remaining, 1.0)):
                w = handles[ready]
                if w not in pending:
                    continue
                conn = self._conns[w]
                if ready is conn or conn.poll():
                    try:
                        status, payload = conn.recv()
                    except (EOFError, OSError):
                        fault(w, f"died during {what!r}")
                        continue
                    if status == "error":
                        i, tb = payload
                        fault(w, f"raised during {what!r} in env {i} "
                              f"(task {self.tasks[i].task_id!r}):\n{tb}" if i is not None
                              else f"raised during {what!r}:\n{tb}")  # fmt: skip
                        continue
                    results[w] = payload
                    pending.discard(w)
                else:
                    fault(w, f"died during {what!r}")
        return results

    def _fail(self, w: int, reason: str) -> None:
        proc = self._procs[w]
        proc.join(0.2)
        self._raise_fault(f"env worker {w} (pid {proc.pid}, exit code {proc.exitcode})", w,
                          reason)


def env_kwargs_from_config(env_config) -> dict:
    """make_env options of `config.env`: its free-form kwargs plus image_size (frame
    resizing) and actions_per_decision (low-level actions one Minecraft decision runs)."""
    e = env_config
    return dict(e.kwargs, image_size=e.image_size, actions_per_decision=e.actions_per_decision)


def pool_from_config(tasks_per_env: Sequence[Task], env_config):
    """The pool `config.env` describes: pool_mode "sync" / "async" (EnvPool) or "ray"
    (grow_jax.envs.ray_pool.RayEnvPool), with its timeout, fault policy and pipelining."""
    e = env_config
    if e.pool_mode == "ray":  # envs in Ray actors (the grow_jax[ray] extra)
        from grow_jax.envs.ray_pool import ray_pool_from_config

        return ray_pool_from_config(tasks_per_env, e)
    return EnvPool(tasks_per_env, env_kwargs=env_kwargs_from_config(e), mode=e.pool_mode,
                   timeout_s=e.timeout_s, fault_policy=e.fault_policy,
                   max_faults_in_a_row=e.max_faults_in_a_row, pipeline=e.pipeline)
