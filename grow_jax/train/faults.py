"""Host-side bookkeeping of numerical faults: updates the train step skipped for a non-finite
loss or gradient (`grow_jax.train.step._skip_if_not_finite`), and the stop after too many
in a row (config.rl.max_skipped_updates)."""

from __future__ import annotations

from grow_jax.errors import RunError


class SkipGuard:
    """Counts skipped updates per iteration and the current run of consecutive skips."""

    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self._iteration = 0

    def update(self, metrics: dict, n_updates: int) -> None:
        """Reads (and removes) one train-step call's skip counters from its host metrics."""
        skipped = int(metrics.pop("skipped_updates", 0))
        tail = int(metrics.pop("skipped_tail", 0))
        self._iteration += skipped
        self.in_a_row = self.in_a_row + n_updates if tail == n_updates else tail

    def row(self) -> dict:
        """{"skipped_updates": this iteration's count}; starts the next iteration's count."""
        out, self._iteration = {"skipped_updates": self._iteration}, 0
        return out

    def check(self, iteration: int, last_checkpoint: str) -> None:
        if self.max_in_a_row and self.in_a_row >= self.max_in_a_row:
            raise RunError(
                f"stopped at iteration {iteration}: {self.in_a_row} updates in a row had a "
                f"non-finite loss or gradient (rl.max_skipped_updates={self.max_in_a_row}); "
                f"they were skipped, the last good checkpoint is {last_checkpoint}")
