"""EnvPool: N environments stepped together, in-process ("sync") or in worker processes ("async").

Async workers each own a contiguous block of envs and talk over pipes. The parent waits on
both the pipes and the process sentinels, so a worker that dies (or raises) is reported at
once as `EnvWorkerError` naming its envs and tasks, and a stuck worker after `timeout_s`.
Observations always cross as copies (pickled, or copied by the env in sync mode).
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from grow_jax.envs import make_env
from grow_jax.envs.base import Obs, Task


class EnvWorkerError(RuntimeError):
    """An env worker died, raised, or did not answer in time."""


def _worker_main(conn, tasks: dict[int, Task], env_kwargs: Mapping[str, Any]) -> None:
    current = None
    try:
        envs = {}
        for i, task in tasks.items():
            current = i
            envs[i] = make_env(task, **env_kwargs)
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


class EnvPool:
    """Steps `len(tasks)` envs (env i runs tasks[i]) with `make_env(task, **env_kwargs)`.

    Args:
      tasks: one task per env.
      env_kwargs: suite options passed to every env (tile_size, size, fake, ...).
      mode: "sync" (in-process) or "async" (worker processes).
      num_workers: async workers (default: min(num envs, cpu count)).
      timeout_s: longest wait for any reset/step/start-up answer before raising.
      start_method: multiprocessing start method ("spawn" is safe with jax threads running).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        env_kwargs: Mapping[str, Any] | None = None,
        mode: str = "sync",
        num_workers: int | None = None,
        timeout_s: float = 300.0,
        start_method: str = "spawn",
    ):
        if mode not in ("sync", "async"):
            raise ValueError(f"EnvPool mode must be 'sync' or 'async', got {mode!r}")
        if not tasks:
            raise ValueError("EnvPool needs at least one task")
        self.tasks = list(tasks)
        self.mode = mode
        self.timeout_s = timeout_s
        self._closed = False
        env_kwargs = dict(env_kwargs or {})
        if mode == "sync":
            self._envs = [make_env(t, **env_kwargs) for t in self.tasks]
            return
        n = len(self.tasks)
        num_workers = min(n, num_workers or mp.cpu_count())
        ctx = mp.get_context(start_method)
        self._blocks = [list(b) for b in np.array_split(np.arange(n), num_workers)]
        self._owner = {i: w for w, block in enumerate(self._blocks) for i in block}
        self._conns, self._procs = [], []
        for w, block in enumerate(self._blocks):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(child, {int(i): self.tasks[i] for i in block}, env_kwargs),
                name=f"grow_jax-env-worker-{w}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._gather(list(range(num_workers)), "start-up")

    @property
    def num_envs(self) -> int:
        return len(self.tasks)

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs] if self.mode == "async" else []

    def reset(
        self, seeds: Sequence[int | None] | None = None, indices: Sequence[int] | None = None
    ) -> list[Obs]:
        """Resets envs `indices` (default all) with `seeds` (None: each task's seed)."""
        indices = self._indices(indices)
        seeds = [None] * len(indices) if seeds is None else list(seeds)
        if len(seeds) != len(indices):
            raise ValueError(f"reset got {len(seeds)} seeds for {len(indices)} envs")
        seeds = [None if s is None else int(s) for s in seeds]
        return self._run("reset", dict(zip(indices, seeds)))

    def step(self, actions: Sequence[Any], indices: Sequence[int] | None = None):
        """Steps envs `indices` (default all); returns (obs list, rewards, terminated,
        truncated, infos) in the order of `indices`."""
        indices = self._indices(indices)
        if len(actions) != len(indices):
            raise ValueError(f"step got {len(actions)} actions for {len(indices)} envs")
        results = self._run("step", dict(zip(indices, actions)))
        obs, rew, term, trunc, infos = zip(*results)
        return (
            list(obs),
            np.asarray(rew, np.float32),
            np.asarray(term, bool),
            np.asarray(trunc, bool),
            list(infos),
        )

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()

    # ------------------------------------------------------------- internals

    def _indices(self, indices: Sequence[int] | None) -> list[int]:
        if self._closed:
            raise EnvWorkerError("EnvPool is closed")
        if indices is None:
            return list(range(self.num_envs))
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < self.num_envs]
        if bad or len(set(indices)) != len(indices):
            raise ValueError(f"env indices must be distinct and in [0, {self.num_envs}): {indices}")
        return indices

    def _run(self, cmd: str, args: dict[int, Any]) -> list[Any]:
        if self.mode == "sync":
            out = []
            for i, arg in args.items():
                env = self._envs[i]
                out.append(env.reset(arg) if cmd == "reset" else env.step(arg))
            return out
        per_worker: dict[int, dict[int, Any]] = {}
        for i, arg in args.items():
            per_worker.setdefault(self._owner[i], {})[i] = arg
        for w, payload in per_worker.items():
            try:
                self._conns[w].send((cmd, payload))
            except (BrokenPipeError, OSError):
                self._fail(w, f"could not send {cmd!r}: worker is gone")
        results = self._gather(list(per_worker), cmd)
        merged = {}
        for r in results.values():
            merged.update(r)
        return [merged[i] for i in args]

    def _gather(self, workers: list[int], what: str) -> dict[int, Any]:
        """Waits for one answer from each worker, failing fast on death, error or timeout."""
        pending = set(workers)
        results = {}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(min(pending), f"no answer to {what!r} within {self.timeout_s:.1f} s")
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
                        self._fail(w, f"died during {what!r}")
                    if status == "error":
                        i, tb = payload
                        self._fail(w, f"raised during {what!r} in env {i} "
                                   f"(task {self.tasks[i].task_id!r}):\n{tb}" if i is not None
                                   else f"raised during {what!r}:\n{tb}")  # fmt: skip
                    results[w] = payload
                    pending.discard(w)
                else:
                    self._fail(w, f"died during {what!r}")
        return results

    def _fail(self, w: int, reason: str) -> None:
        proc = self._procs[w]
        proc.join(0.2)
        code = proc.exitcode
        envs = ", ".join(f"{i}:{self.tasks[i].task_id}" for i in self._blocks[w])
        msg = (f"env worker {w} (pid {proc.pid}, exit code {code}) running envs [{envs}] "
               f"{reason}")  # fmt: skip
        self.close(graceful=False)
        raise EnvWorkerError(msg)
