"""GRPO-CARE's consistency bonus (arXiv 2506.16141) as an option on `grow`
(`algo.care_coef > 0`), adapted to agent episodes.

An EMA copy of the policy (decay `algo.care_ema_decay`, updated after every
`algo.care_ema_every` iterations) scores each episode: its likelihood is the mean, over the
episode's sampled action tokens, of the EMA model's log-probability given each decision's
prompt (GRPO-CARE scores the answer given the reasoning; an episode's actions given its
observations are this setting's answer). Within a group, the successful episodes are the
high-accuracy peers; a successful episode whose likelihood is above their mean gets
`care_coef * R_i` added to its return (on its last reward) before GROW's group
normalization. Groups with fewer than two successes get no bonus.

Memory: one more parameter copy (like the KL reference). Resume: the EMA is saved to
WORKDIR/care_ema at every training checkpoint and restored at the resumed iteration.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from grow_jax.rollout.types import Trajectory
from grow_jax.train.checkpoint import Checkpointer
from grow_jax.train.reference import Reference


def consistency_bonus(returns: np.ndarray, success: np.ndarray, likelihood: np.ndarray,
                      coef: float) -> np.ndarray:
    """Per-episode bonus of one group: coef * R_i for successful episodes whose likelihood
    beats the mean likelihood of the group's successful episodes (needs >= 2 of them)."""
    returns, likelihood = np.asarray(returns, np.float64), np.asarray(likelihood, np.float64)
    success = np.asarray(success, bool)
    bonus = np.zeros_like(returns)
    if success.sum() >= 2:
        beat = success & (likelihood > likelihood[success].mean())
        bonus[beat] = coef * returns[beat]
    return bonus


def add_bonus(group: list[Trajectory], bonus: np.ndarray) -> list[np.ndarray]:
    """The group's rewards with each episode's bonus added to its last reward."""
    out = []
    for tr, b in zip(group, bonus, strict=True):
        r = tr.rewards.astype(np.float64)
        r[-1] += b
        out.append(r)
    return out


class EmaReference(Reference):
    """The slowly moving reference: ema <- decay * ema + (1 - decay) * params."""

    DIRNAME = "care_ema"

    def __init__(self, learner, params, *, decay: float, every: int, workdir: str, keep: int):
        super().__init__(learner, params)
        self.decay, self.every, self.workdir, self.keep = decay, every, workdir, keep
        self._mix = jax.jit(lambda e, p: jax.tree.map(
            lambda a, b: decay * a + (1.0 - decay) * b, e, p))

    def _checkpointer(self) -> Checkpointer:
        return Checkpointer(self.directory(self.workdir), max_to_keep=self.keep,
                            async_save=False)

    def after_iteration(self, iteration: int, params, save: bool) -> None:
        """EMA update every `every` iterations; saved with the training checkpoints."""
        if iteration % self.every == 0:
            self.params = self._mix(self.params, params)
        if save:
            with self._checkpointer() as ck:
                ck.save(iteration, {"params": nnx.to_pure_dict(self.params)}, force=True)

    @classmethod
    def setup(cls, learner, params, workdir: str, algo_cfg, keep: int,
              resume_iteration: int | None) -> "EmaReference":
        """A fresh EMA of `params` (saved as iteration 0), or the one saved at
        `resume_iteration`."""
        ema = cls(learner, params, decay=algo_cfg.care_ema_decay,
                  every=algo_cfg.care_ema_every, workdir=workdir, keep=keep)
        with ema._checkpointer() as ck:
            if resume_iteration is None:
                ck.save(0, {"params": nnx.to_pure_dict(ema.params)}, force=True)
                return ema
            if resume_iteration not in ck.all_steps():
                raise FileNotFoundError(
                    f"config error: algo.care_coef > 0 but {ema.directory(workdir)} has no EMA "
                    f"for iteration {resume_iteration}; start a new workdir")
            pure = ck.restore({"params": nnx.to_pure_dict(ema.params)},
                              resume_iteration)["params"]
        nnx.replace_by_pure_dict(ema.params, pure)
        return ema

    def likelihoods(self, samples, minibatch: int, model_config, pad_id: int) -> np.ndarray:
        """[N] mean EMA log-probability of each sample's action tokens."""
        self.annotate(samples, minibatch, model_config, pad_id)
        out = np.array([float(np.mean(s.ref_logprobs)) for s in samples])
        for s in samples:  # the KL reference, if any, sets its own later
            s.ref_logprobs = None
        return out
