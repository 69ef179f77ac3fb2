"""Graceful preemption (SIGTERM / SIGINT) and the test hook that kills a run at a named point.

`GracefulStop` turns SIGTERM and SIGINT into a flag the training loop reads between
iterations: the current iteration finishes, a checkpoint is written and waited for, and the
process exits 0 (Cloud TPU preemption gives about 30 s). A second signal of the same kind
while stopping falls back to the default behaviour (immediate exit), so a user can still
abort a stuck save with a second Ctrl-C.

Test hook: ``GROW_JAX_TEST_KILL_AT=POINT:ITERATION[:SIGNAL]`` (e.g. ``update:3``) makes the
process send itself SIGNAL (default SIGKILL; e.g. ``rollout:1:SIGTERM`` tests preemption)
when it reaches POINT in ITERATION, so kill tests need no timing. Points:
``rollout`` (episodes played, nothing updated), ``update`` (params updated, nothing logged),
``eval`` (evaluation played, its row not written), ``checkpoint`` (an asynchronous save
started, not committed), ``metrics`` (half of the row's line written). Unset (the default),
the hook does nothing.
"""

from __future__ import annotations

import os
import signal
import sys

KILL_ENV = "GROW_JAX_TEST_KILL_AT"


def _spec() -> list[str]:
    return os.environ.get(KILL_ENV, "").split(":")


def kill_requested(point: str, iteration) -> bool:
    """Whether the test hook asks for a signal at `point` of `iteration`."""
    spec = _spec()
    return len(spec) >= 2 and spec[0] == point and spec[1] == str(iteration)


def kill_now() -> None:
    """Sends the hook's signal to this process (SIGKILL: no cleanup, like a lost VM)."""
    spec = _spec()
    sig = getattr(signal, spec[2]) if len(spec) > 2 else signal.SIGKILL
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def maybe_kill(point: str, iteration) -> None:
    """The test hook: signal here if GROW_JAX_TEST_KILL_AT names this point and iteration."""
    if kill_requested(point, iteration):
        kill_now()


class GracefulStop:
    """Context manager: while active, SIGTERM / SIGINT set `requested` instead of killing.

    Installs handlers only in the main thread (signal handlers cannot be set elsewhere) and
    restores the previous ones on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: the default action
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        self.requested = signal.Signals(signum).name
        print(f"[train] {self.requested} received: finishing this iteration, then saving a "
              "checkpoint and exiting", file=sys.stderr, flush=True)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
