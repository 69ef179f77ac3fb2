"""Records of played episodes: one `Step` per model decision, one `Trajectory` per episode.

Everything here is host-side numpy. A step keeps exactly what training needs to rebuild
the decision (prompt token ids, the images shown, the sampled action tokens and their
behaviour log-probabilities) plus what evaluation and videos need (reward, flags, text).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Step:
    """One decision: the prompt the policy saw and the action tokens it sampled."""

    frame: np.ndarray  # HWC uint8 observation the decision was made on (an owned copy)
    prompt_ids: np.ndarray  # int32 [Tp] prompt tokens, image pads included
    action_ids: np.ndarray  # int32 [Ta] sampled tokens (stop token included if emitted)
    logprobs: np.ndarray  # float32 [Ta] behaviour log-probabilities of action_ids
    reward: float = 0.0  # env reward after this decision (format penalty included)
    invalid: bool = False  # the action text did not parse; a no-op was played
    action_text: str = ""  # decoded action, for videos and logs


@dataclasses.dataclass
class Trajectory:
    """One episode of one task; `group` ties the G episodes that share task and seed."""

    task_id: str
    instruction: str
    seed: int
    group: int
    steps: list[Step] = dataclasses.field(default_factory=list)
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    history: int = 0  # previous decisions shown in each prompt (k; 0 as in GROW, -1 = all)
    family: str = ""

    @property
    def length(self) -> int:
        return len(self.steps)

    @property
    def rewards(self) -> np.ndarray:
        return np.asarray([s.reward for s in self.steps], np.float32)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

    def prompt_images(self, t: int) -> list[np.ndarray]:
        """The frames shown in decision t's prompt: the previous ones it shows, then its own."""
        first = 0 if self.history < 0 else max(0, t - self.history)
        return [s.frame for s in self.steps[first:t + 1]]


def group_trajectories(trajs: list[Trajectory]) -> list[list[Trajectory]]:
    """Splits a rollout into its groups (same `group` id), in first-seen order."""
    groups: dict[int, list[Trajectory]] = {}
    for tr in trajs:
        groups.setdefault(tr.group, []).append(tr)
    return list(groups.values())
