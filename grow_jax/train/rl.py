"""From one iteration's trajectories to training samples: advantages per group, then
state-action samples (GROW and step-level baselines) or whole conversations (grpo_traj).

Estimator settings come from the estimator itself (`grow_jax.algo.advantages`): its
keyword parameters and defaults, the `algo.*` config keys it declares (`config_keys`),
and `algo.params` (free-form, per-estimator overrides of any parameter, e.g.
`{"gamma": 0.9, "mode": "mean_std_norm"}` for gigpo). `validate(config)` checks all of it
before anything runs.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from grow_jax.algo import advantages as adv_lib
from grow_jax.algo import losses
from grow_jax.data.samples import Sample, conversation_sample, decision_samples
from grow_jax.rollout.types import Trajectory, group_trajectories

# Estimators whose training sample is the whole multi-turn conversation.
CONVERSATION_ESTIMATORS = ("grpo_traj",)
# Estimators that need a value head (PPO): advantages by GAE on V(s) of every decision.
VALUE_ESTIMATORS = ("ppo", "ppo_cot")
COT_MIN_NEW_TOKENS = 16  # ppo_cot: thoughts + "Action:" + action word + <|im_end|>


def estimator_kwargs(algo_cfg, name: str) -> dict:
    """Settings of estimator `name`: its declared config keys, then `algo.params`."""
    kwargs = {p: algo_cfg[k] for p, k in adv_lib.ESTIMATORS.config_keys(name).items()}
    kwargs.update(dict(algo_cfg.params))
    return kwargs


def _fail(msg: str):
    raise ValueError(f"config error: {msg}")


def validate(config) -> None:
    """Checks algo.* and what the chosen estimator needs, with one-line errors.

    Called at the top of the train mode, before SFT and the first evaluation. A dry run of
    the estimator on a two-episode group checks every parameter value with the
    estimator's own checks.
    """
    g, a = config.algo, config.agent
    names = adv_lib.estimator_names()
    if g.name not in names:
        _fail(f"algo.name {g.name!r} is not an estimator; expected one of {', '.join(names)}")
    context = adv_lib.ESTIMATORS.context(g.name)
    accepted = set(adv_lib.estimator_params(g.name)) - set(context)
    unknown = sorted(set(g.params) - accepted)
    if unknown:
        _fail(f"algo.params {unknown} are not parameters of estimator {g.name!r}; accepted: "
              f"{', '.join(sorted(accepted))}")
    dummy = {"obs_keys": [["a"], ["a"]], "values": [[0.0, 0.0], [0.0, 0.0]]}
    try:
        adv_lib.estimate(g.name, [[1.0], [0.0]], **estimator_kwargs(g, g.name),
                         **{k: dummy[k] for k in context})
    except ValueError as e:
        _fail(f"algo ({g.name}): {e}")
    if g.name in CONVERSATION_ESTIMATORS and a.history != -1:
        _fail(f"algo.name={g.name!r} trains whole conversations and needs agent.history=-1, "
              f"got {a.history}")
    if g.name == "ppo_cot" and a.max_new_tokens < COT_MIN_NEW_TOKENS:
        _fail(f"algo.name='ppo_cot' needs room for thoughts: agent.max_new_tokens >= "
              f"{COT_MIN_NEW_TOKENS}, got {a.max_new_tokens}")
    if a.temperature <= 0:
        _fail(f"agent.temperature must be > 0 for RL rollouts (got {a.temperature}); greedy "
              "decoding is eval.greedy")
    checks = [
        (g.kl_coef >= 0, f"algo.kl_coef must be >= 0, got {g.kl_coef}"),
        (g.entropy_coef >= 0, f"algo.entropy_coef must be >= 0, got {g.entropy_coef}"),
        (g.entropy_floor >= 0 and g.entropy_floor_coef >= 0,
         f"algo.entropy_floor / entropy_floor_coef must be >= 0, got {g.entropy_floor} / "
         f"{g.entropy_floor_coef}"),
        (g.clip_low >= 0 and g.clip_high >= 0,
         f"algo.clip_low/clip_high must be >= 0, got {g.clip_low}/{g.clip_high}"),
        (g.aggregation in losses.AGGREGATIONS,
         f"algo.aggregation must be one of {losses.AGGREGATIONS}, got {g.aggregation!r}"),
        (g.name not in VALUE_ESTIMATORS or g.value_coef > 0,
         f"algo.name={g.name!r} trains a value head: algo.value_coef must be > 0, got "
         f"{g.value_coef}"),
        (0 <= g.gae_lambda <= 1, f"algo.gae_lambda must be in [0, 1], got {g.gae_lambda}"),
        (g.cot_lambda >= 0, f"algo.cot_lambda must be >= 0, got {g.cot_lambda}"),
        (g.care_coef >= 0, f"algo.care_coef must be >= 0, got {g.care_coef}"),
        (g.care_coef == 0 or g.name == "grow",
         f"algo.care_coef > 0 (GRPO-CARE) is an option on grow, not {g.name!r}"),
        (0 < g.care_ema_decay < 1, f"algo.care_ema_decay must be in (0, 1), got "
         f"{g.care_ema_decay}"),
        (g.care_ema_every >= 1, f"algo.care_ema_every must be >= 1, got {g.care_ema_every}"),
        (config.rl.seeds_per_group >= 1
         and config.rl.group_size % config.rl.seeds_per_group == 0,
         f"rl.seeds_per_group must be >= 1 and divide rl.group_size={config.rl.group_size}, "
         f"got {config.rl.seeds_per_group}"),
        (config.rl.kl_backtracks >= 0 and (config.rl.kl_backtracks == 0
                                           or config.rl.target_kl > 0),
         f"rl.kl_backtracks must be >= 0 and needs rl.target_kl > 0 (the bound it keeps "
         f"each step within), got {config.rl.kl_backtracks} with rl.target_kl="
         f"{config.rl.target_kl}"),
        (a.decode_dtype in (None, "float32", "bfloat16"),
         f"agent.decode_dtype must be float32, bfloat16 or None (model.dtype), got "
         f"{a.decode_dtype!r}"),
        (a.decode_dtype is None or g.recompute_old_logprobs
         or a.decode_dtype == config.model.dtype == config.model.param_dtype,
         f"agent.decode_dtype={a.decode_dtype!r} samples with other weights than the learner's "
         f"(model.dtype={config.model.dtype!r}, param_dtype={config.model.param_dtype!r}), so "
         "the sampler's logprobs are not the learner's: set algo.recompute_old_logprobs=True "
         "(the learner re-scores them before the epochs)"),
        (a.top_k >= 0, f"agent.top_k must be >= 0, got {a.top_k}"),
        (0 < a.top_p <= 1, f"agent.top_p must be in (0, 1], got {a.top_p}"),
    ]
    for ok, msg in checks:
        if not ok:
            _fail(msg)


def frame_key(tr: Trajectory, t: int) -> str:
    """Anchor-state key for GiGPO: the instruction and the exact frame of decision t."""
    h = hashlib.blake2b(tr.steps[t].frame.tobytes(), digest_size=16)
    h.update(tr.instruction.encode())
    return h.hexdigest()


def group_advantages(group: list[Trajectory], algo_cfg) -> list[np.ndarray]:
    name = algo_cfg.name
    kwargs = estimator_kwargs(algo_cfg, name)
    if name == "gigpo":
        kwargs["obs_keys"] = [[frame_key(tr, t) for t in range(tr.length)] for tr in group]
    return adv_lib.estimate(name, [tr.rewards for tr in group], **kwargs)


def build_samples(trajs: list[Trajectory], algo_cfg, model_config, fit_mode: str = "pad",
                  values_fn: Callable[[list[Sample]], np.ndarray] | None = None,
                  thought_len: Callable[[np.ndarray], int] | None = None,
                  likelihood_fn: Callable[[list[Sample]], np.ndarray] | None = None
                  ) -> tuple[list[Sample], dict]:
    """Advantages per group, then samples; returns (samples, stats).

    PPO estimators need `values_fn` (samples -> V(s) per sample, e.g. a `ValuePass`);
    ppo_cot also needs `thought_len` (action ids -> how many leading tokens are thoughts);
    grow with algo.care_coef > 0 needs `likelihood_fn` (samples -> mean EMA-reference
    logprob per sample, train/care.py).
    """
    if algo_cfg.name in VALUE_ESTIMATORS:
        if values_fn is None:
            raise ValueError(f"build_samples: {algo_cfg.name} needs values_fn (a value head)")
        return _value_samples(trajs, algo_cfg, model_config, fit_mode, values_fn, thought_len)
    if algo_cfg.care_coef > 0:
        if likelihood_fn is None:
            raise ValueError("build_samples: algo.care_coef > 0 needs likelihood_fn")
        return _care_samples(trajs, algo_cfg, model_config, fit_mode, likelihood_fn)
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


def _value_samples(trajs, algo_cfg, model_config, fit_mode, values_fn, thought_len):
    """PPO: one sample per decision; V(s) from `values_fn`, then GAE per episode.

    The bootstrap value after the last decision is 0 (terminated and truncated alike: the
    state after a truncation has no prompt sample to score). Advantages are not
    normalized (docs/algorithms.md).
    """
    trajs = [tr for tr in trajs if tr.length]
    per_traj = []
    for tr in trajs:
        s = decision_samples(tr, np.zeros(tr.length), model_config, fit_mode)
        if len(s) != tr.length:
            raise ValueError(f"PPO needs a sample per decision; task {tr.task_id!r} has a "
                             "decision without action tokens")
        per_traj.append(s)
    flat = [s for ss in per_traj for s in ss]
    if not flat:
        return [], dict(decisions=0, kept_decisions=0, adv_abs_mean=0.0)
    values = np.asarray(values_fn(flat), np.float64)
    splits = np.cumsum([len(ss) for ss in per_traj])[:-1]
    vals = [np.append(v, 0.0) for v in np.split(values, splits)]
    advs = adv_lib.estimate(algo_cfg.name, [tr.rewards for tr in trajs], values=vals,
                            **estimator_kwargs(algo_cfg, algo_cfg.name))
    for tr, ss, a, v in zip(trajs, per_traj, advs, vals):
        for t, s in enumerate(ss):
            k = len(s.target_pos)
            s.advantages = np.full(k, a[t], np.float32)
            s.old_values = np.full(k, v[t], np.float32)
            s.returns = np.full(k, a[t] + v[t], np.float32)  # GAE value target
            if algo_cfg.name == "ppo_cot":
                w = np.ones(k, np.float32)
                w[:thought_len(tr.steps[t].action_ids)] = algo_cfg.cot_lambda
                s.token_weights = w
    adv_abs = np.abs(np.concatenate(advs))
    return flat, dict(decisions=len(flat), kept_decisions=len(flat),
                      adv_abs_mean=float(adv_abs.mean()), value_mean=float(values.mean()))


def _care_samples(trajs, algo_cfg, model_config, fit_mode, likelihood_fn):
    """grow + GRPO-CARE's consistency bonus: every decision is scored by the EMA reference
    first (one sample per decision), the bonus is added to the returns, then GROW."""
    from grow_jax.train.care import add_bonus, consistency_bonus

    groups = [g for g in ([tr for tr in g if tr.length] for g in group_trajectories(trajs))
              if g]
    per = [[decision_samples(tr, np.zeros(tr.length), model_config, fit_mode) for tr in g]
           for g in groups]
    if any(len(ss) != tr.length for g, pg in zip(groups, per) for tr, ss in zip(g, pg)):
        raise ValueError("GRPO-CARE needs a sample per decision; a decision has no action tokens")
    flat = [s for pg in per for ss in pg for s in ss]
    if not flat:
        return [], dict(decisions=0, kept_decisions=0, adv_abs_mean=0.0, care_bonus_frac=0.0)
    lik = np.asarray(likelihood_fn(flat), np.float64)
    kwargs = estimator_kwargs(algo_cfg, algo_cfg.name)
    samples, adv_abs, n_bonus, n_ep, i = [], [], 0, 0, 0
    for group, pg in zip(groups, per):
        ep_lik = []
        for tr in group:
            ep_lik.append(lik[i:i + tr.length].mean())
            i += tr.length
        bonus = consistency_bonus(np.array([tr.episode_return for tr in group]),
                                  np.array([tr.success for tr in group]), np.array(ep_lik),
                                  algo_cfg.care_coef)
        n_bonus += int((bonus != 0).sum())
        n_ep += len(group)
        advs = adv_lib.estimate(algo_cfg.name, add_bonus(group, bonus), **kwargs)
        drop = (adv_lib.drop_zero_advantage(advs) if algo_cfg.drop_zero_advantage
                else [np.zeros(len(a), bool) for a in advs])
        for ss, a, d in zip(pg, advs, drop):
            adv_abs.append(np.abs(a))
            for t, s in enumerate(ss):
                if not d[t]:
                    s.advantages = np.full(len(s.target_pos), a[t], np.float32)
                    samples.append(s)
    return samples, dict(decisions=len(flat), kept_decisions=len(samples),
                         adv_abs_mean=float(np.concatenate(adv_abs).mean()),
                         care_bonus_frac=n_bonus / max(n_ep, 1))
