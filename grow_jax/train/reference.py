"""The frozen KL reference (`algo.kl_coef > 0`): the weights RL started from.

Its log-probabilities of the sampled action tokens enter the loss's k3 term
(`losses.policy_loss(..., ref_logprobs=)`). They are computed once per iteration, before
the epochs, by one jitted forward per minibatch-sized chunk of the iteration's samples
(the train step's batch layout and shardings), and stored on each `Sample`.

Memory: one more copy of the parameters (in `model.param_dtype`, sharded like the
policy's), no optimizer state and no gradients. Resume: the copy is checkpointed once,
at the start of RL, to WORKDIR/reference (checkpoint rotation never removes it), and a
resumed run restores it from there, so the reference is the true RL start whatever
produced it (SFT in the same process, an SFT/import_hf workdir, or random init).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grow_jax import distributed
from grow_jax.algo import losses
from grow_jax.data.samples import Sample
from grow_jax.train.checkpoint import Checkpointer
from grow_jax.train.step import Learner, action_logits, chunk_batches, constrained_logits

REFERENCE_DIR = "reference"


class LogprobPass:
    """Jitted log-probabilities of every sample's action tokens under given params, one
    minibatch-sized chunk at a time. Scores the frozen reference, and with
    `algo.recompute_old_logprobs` the behaviour policy in the learner's dtype and layout."""

    def __init__(self, learner: Learner):
        self.learner = learner
        self._fn = distributed.lockstep(jax.jit(functools.partial(
            _ref_logprobs, graphdef=learner.graphdef, cfg=learner.cfg)))

    def __call__(self, params, samples: list[Sample], minibatch: int, model_config,
                 pad_id: int = 0) -> list[np.ndarray]:
        """One float32 [K] array per sample (in order)."""
        out = []
        for chunk, batch in chunk_batches(self.learner.mesh, samples, minibatch, model_config,
                                          pad_id):
            rows = distributed.host_value(self._fn(params, self.learner.rest, batch))
            out += [row[:len(s.target_pos)].astype(np.float32) for s, row in zip(chunk, rows)]
        return out


def recompute_old_logprobs(score: LogprobPass, params, samples: list[Sample], minibatch: int,
                           model_config, pad_id: int = 0) -> dict:
    """Replaces each sample's behaviour logprobs (the sampler's) by the learner's own for
    the same params; returns how far apart they were (mean and max |difference| per token)."""
    new = score(params, samples, minibatch, model_config, pad_id)
    diff = np.concatenate([np.abs(n - s.old_logprobs) for s, n in zip(samples, new)])
    for s, n in zip(samples, new):
        s.old_logprobs = n
    return dict(old_logprob_err_mean=float(diff.mean()), old_logprob_err_max=float(diff.max()))


def _ref_logprobs(params, rest, batch, *, graphdef, cfg):
    """[B, K] logprobs of the targets of a [1, 1, B, ...] batch under `params`, with the
    rollout policy's settings (temperature, filter, suppressed tokens, grammar)."""
    mb = jax.tree.map(lambda x: x[0, 0], batch)
    model = nnx.merge(graphdef, params, rest)
    logits = losses.policy_logits(constrained_logits(action_logits(model, mb), mb, cfg),
                                  temperature=cfg.temperature, top_k=cfg.top_k,
                                  top_p=cfg.top_p, always_keep=mb["targets"])
    return losses.token_logprobs(logits, mb["targets"])


class Reference:
    """A frozen copy of `params` and the jitted forward that scores samples with it."""

    DIRNAME = REFERENCE_DIR

    def __init__(self, learner: Learner, params):
        self.learner = learner
        self.params = jax.tree.map(jnp.copy, params)  # own buffers: the policy's get donated
        self._score = LogprobPass(learner)

    @classmethod
    def directory(cls, workdir: str) -> str:
        return os.path.join(workdir, cls.DIRNAME)

    @classmethod
    def start(cls, learner: Learner, params, workdir: str) -> "Reference":
        """The reference of a fresh RL run: `params` (the RL start), saved to WORKDIR."""
        ref = cls(learner, params)
        with Checkpointer(cls.directory(workdir), max_to_keep=1, async_save=False) as ck:
            ck.save(0, {"params": nnx.to_pure_dict(ref.params)}, force=True)
        return ref

    @classmethod
    def resume(cls, learner: Learner, template, workdir: str) -> "Reference":
        """The reference saved by `start` in WORKDIR, restored onto `template`'s shardings."""
        path = cls.directory(workdir)
        with Checkpointer(path, max_to_keep=1, async_save=False) as ck:
            if ck.latest_step() is None:
                raise FileNotFoundError(
                    f"config error: algo.kl_coef > 0 but {path} holds no reference: this run "
                    "started with kl_coef = 0; start a new workdir to use a KL reference")
            pure = ck.restore({"params": nnx.to_pure_dict(template)})["params"]
        ref = cls(learner, template)
        nnx.replace_by_pure_dict(ref.params, pure)
        return ref

    def annotate(self, samples: list[Sample], minibatch: int, model_config,
                 pad_id: int = 0) -> None:
        """Sets `ref_logprobs` [K] on every sample, `minibatch` samples per forward."""
        for s, lp in zip(samples, self._score(self.params, samples, minibatch, model_config,
                                               pad_id)):
            s.ref_logprobs = lp
