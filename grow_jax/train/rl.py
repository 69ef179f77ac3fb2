"""From one iteration's trajectories to training samples: advantages per group, then
state-action samples (GROW and step-level baselines) or whole conversations (grpo_traj)."""

from __future__ import annotations

import hashlib

import numpy as np

from grow_jax.algo import advantages as adv_lib
from grow_jax.data.samples import Sample, conversation_sample, decision_samples
from grow_jax.rollout.types import Trajectory, group_trajectories

# Estimators whose training sample is the whole multi-turn conversation.
CONVERSATION_ESTIMATORS = ("grpo_traj",)
SUPPORTED = ("grow", "grpo_traj", "tgrpo", "gigpo")


def estimator_kwargs(algo_cfg, name: str) -> dict:
    """The config's settings for estimator `name` (only the parameters it accepts)."""
    known = dict(gamma=algo_cfg.gamma, return_type=algo_cfg.return_type,
                 normalize_std=algo_cfg.std_normalize, eps=algo_cfg.adv_eps,
                 alpha1=algo_cfg.tgrpo_alpha_step, alpha2=algo_cfg.tgrpo_alpha_traj,
                 omega=algo_cfg.gigpo_step_weight, uniform_groups=algo_cfg.grow_uniform_groups,
                 uniform_weight=algo_cfg.grow_uniform_weight,
                 length_norm=algo_cfg.grow_length_norm)
    accepted = adv_lib.estimator_params(name)
    return {k: v for k, v in known.items() if k in accepted}


def frame_key(tr: Trajectory, t: int) -> str:
    """Anchor-state key for GiGPO: the instruction and the exact frame of decision t."""
    h = hashlib.blake2b(tr.steps[t].frame.tobytes(), digest_size=16)
    h.update(tr.instruction.encode())
    return h.hexdigest()


def group_advantages(group: list[Trajectory], algo_cfg) -> list[np.ndarray]:
    name = algo_cfg.name
    if name not in SUPPORTED:
        raise ValueError(f"config error: algo.name {name!r} is not trainable in this build; "
                         f"supported: {SUPPORTED} (ppo/ppo_cot need the value head, not yet "
                         "implemented)")
    kwargs = estimator_kwargs(algo_cfg, name)
    if name == "gigpo":
        kwargs["obs_keys"] = [[frame_key(tr, t) for t in range(tr.length)] for tr in group]
    return adv_lib.estimate(name, [tr.rewards for tr in group], **kwargs)


def build_samples(trajs: list[Trajectory], algo_cfg, model_config,
                  fit_mode: str = "pad") -> tuple[list[Sample], dict]:
    """Advantages per group, then samples; returns (samples, stats)."""
    samples: list[Sample] = []
    n_dec = n_kept = 0
    adv_abs = []
    for group in group_trajectories(trajs):
        group = [tr for tr in group if tr.length]
        if not group:
            continue
        advs = group_advantages(group, algo_cfg)
        drop = (adv_lib.drop_zero_advantage(advs) if algo_cfg.drop_zero_advantage
                else [np.zeros(len(a), bool) for a in advs])
        for tr, a, d in zip(group, advs, drop):
            n_dec += tr.length
            adv_abs.append(np.abs(a))
            if algo_cfg.name in CONVERSATION_ESTIMATORS:
                if not d.all():
                    samples.append(conversation_sample(tr, a, model_config, fit_mode))
                    n_kept += tr.length
            else:
                s = decision_samples(tr, a, model_config, fit_mode, keep=~d)
                samples += s
                n_kept += len(s)
    stats = dict(decisions=n_dec, kept_decisions=n_kept,
                 adv_abs_mean=float(np.concatenate(adv_abs).mean()) if adv_abs else 0.0)
    return samples, stats
