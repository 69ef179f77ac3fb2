"""Advantage estimators for one rollout group (host side, numpy).

One group = G episodes of the same task and world seed. Every estimator takes
``rewards``: a list of G 1-D float arrays, ``rewards[i][t]`` the reward received after
decision t of episode i (episode i has H_i >= 1 decisions), and returns per-decision
advantages with the same ragged shape (a list of float64 arrays). Select one by name:

    adv = estimate("grow", rewards, gamma=0.995)

Formulas, defaults and which choices are ours: docs/algorithms.md.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Sequence

import numpy as np

from grow_jax.algo.registry import Registry

ESTIMATORS = Registry("advantage estimator")
register = ESTIMATORS.register

Group = list[np.ndarray]


def estimate(name: str, rewards: Sequence[Any], **params: Any) -> Group:
    """Per-decision advantages of one group with the estimator registered as `name`."""
    return ESTIMATORS.call(name, _as_group(rewards, "rewards"), **params)


def estimator_names() -> tuple[str, ...]:
    return ESTIMATORS.names()


def estimator_params(name: str) -> dict[str, Any]:
    """Parameters of estimator `name` with their defaults (`registry.REQUIRED` if none)."""
    return ESTIMATORS.params(name)


def drop_zero_advantage(advantages: Sequence[Any], tol: float = 1e-8) -> Group:
    """Boolean mask per decision, True where |advantage| < tol (samples that carry no signal).

    Such a sample adds nothing to the policy-gradient term (only to KL/entropy terms and to
    a token-mean denominator); dropping them, e.g. every decision of an all-fail group,
    saves compute and was found to help (docs/algorithms.md).
    """
    if tol < 0:
        raise ValueError(f"drop_zero_advantage: tol must be >= 0, got {tol}")
    return [np.abs(a) < tol for a in _as_group(advantages, "advantages")]


# ----------------------------------------------------------------------------- helpers


def _as_group(x: Sequence[Any], what: str) -> Group:
    """Validates a ragged group: non-empty, each entry 1-D, non-empty and finite."""
    if isinstance(x, np.ndarray) and x.ndim != 2:
        raise ValueError(
            f"{what}: expected a list of 1-D arrays (one per episode), got an "
            f"array of shape {x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{what}: empty group (need at least one episode)")
    out = []
    for i, r in enumerate(x):
        a = np.asarray(r, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{what}[{i}]: expected a non-empty 1-D array, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{what}[{i}]: contains non-finite values")
        out.append(a)
    return out


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"advantage estimator {name!r}: {msg}")


def _check_common(name: str, eps: float, normalize_std: bool, gamma: float | None = None):
    _check(eps >= 0, name, f"eps must be >= 0, got {eps}")
    _check(
        isinstance(normalize_std, (bool, np.bool_)),
        name,
        f"normalize_std must be a bool, got {normalize_std!r}",
    )
    if gamma is not None:
        _check(0.0 < gamma <= 1.0, name, f"gamma must be in (0, 1], got {gamma}")


def _normalize(x: np.ndarray, normalize_std: bool, eps: float) -> np.ndarray:
    """(x - mean) / (std + eps) (population std), or x - mean. All-equal x -> exactly 0."""
    if np.all(x == x[0]):
        return np.zeros_like(x)
    centered = x - x.mean()
    return centered / (x.std() + eps) if normalize_std else centered


def _split(flat: np.ndarray, like: Group) -> Group:
    return np.split(flat, np.cumsum([len(r) for r in like])[:-1])


def discounted_return_to_go(r: np.ndarray, gamma: float) -> np.ndarray:
    """out[t] = sum_{k>=t} gamma^(k-t) r[k]."""
    out = np.empty_like(r, dtype=np.float64)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out


def _trajectory_advantage(rewards: Group, normalize_std: bool, eps: float) -> Group:
    """GRPO over the G episode returns, broadcast to every decision of each episode."""
    adv = _normalize(np.array([r.sum() for r in rewards]), normalize_std, eps)
    return [np.full(len(r), a) for r, a in zip(rewards, adv, strict=True)]


# -------------------------------------------------------------------------- estimators


_NORM_KEYS = {"normalize_std": "std_normalize", "eps": "adv_eps"}
GROW_UNIFORM = ("normalize", "skip", "scale")


@register("grow", config_keys={"gamma": "gamma", "return_type": "return_type",
                               "uniform_groups": "grow_uniform_groups",
                               "uniform_weight": "grow_uniform_weight",
                               "length_norm": "grow_length_norm", **_NORM_KEYS})
def grow(
    rewards: Group,
    *,
    gamma: float = 0.995,
    return_type: str = "outcome",
    normalize_std: bool = True,
    eps: float = 1e-6,
    uniform_groups: str = "normalize",
    uniform_weight: float = 1.0,
    length_norm: bool = False,
) -> Group:
    """GROW: discounted per-decision rewards, normalized over all decisions of the group.

    outcome:    r_{i,t} = gamma^(H_i-1-t) * R_i,  R_i = sum_t rewards[i][t]
    discounted: r_{i,t} = sum_{k>=t} gamma^(k-t) rewards[i][k]
    (identical when the only non-zero reward is the last one).

    Choices the paper leaves open (defaults = the paper's formula):
    uniform_groups: what a uniform-outcome group gets: one whose episodes all succeeded
      (every R_i > 0) or all have the same return. "normalize" normalizes it like any
      group (in an all-success group the std turns the small gamma^(H-1-t) and episode-
      length differences into full-size advantages); "skip" gives it 0; "scale"
      multiplies its normalized advantages by `uniform_weight`.
    length_norm: mean and std weigh every episode equally (each decision by 1/H_i)
      instead of every decision equally (long episodes dominating).
    """
    _check_common("grow", eps, normalize_std, gamma)
    _check(
        return_type in ("outcome", "discounted"),
        "grow",
        f"return_type must be 'outcome' or 'discounted', got {return_type!r}",
    )
    _check(uniform_groups in GROW_UNIFORM, "grow",
           f"uniform_groups must be one of {GROW_UNIFORM}, got {uniform_groups!r}")
    _check(uniform_weight >= 0, "grow", f"uniform_weight must be >= 0, got {uniform_weight}")
    if return_type == "outcome":
        per = [gamma ** np.arange(len(r) - 1, -1, -1, dtype=np.float64) * r.sum() for r in rewards]
    else:
        per = [discounted_return_to_go(r, gamma) for r in rewards]
    x = np.concatenate(per)
    if length_norm:
        w = np.concatenate([np.full(len(r), 1.0 / len(r)) for r in rewards])
        mean = np.sum(w * x) / np.sum(w)
        centered = x - mean
        std = np.sqrt(np.sum(w * centered**2) / np.sum(w))
        adv = np.zeros_like(x) if np.all(x == x[0]) else (
            centered / (std + eps) if normalize_std else centered)
    else:
        adv = _normalize(x, normalize_std, eps)
    totals = np.array([r.sum() for r in rewards])
    if uniform_groups != "normalize" and (np.all(totals > 0) or np.all(totals == totals[0])):
        adv = adv * (0.0 if uniform_groups == "skip" else uniform_weight)
    return _split(adv, rewards)


@register("grpo_traj", config_keys=_NORM_KEYS)
def grpo_traj(rewards: Group, *, normalize_std: bool = True, eps: float = 1e-6) -> Group:
    """Trajectory GRPO: (R_i - mean_R) / (std_R + eps), the same for every decision of episode i."""
    _check_common("grpo_traj", eps, normalize_std)
    return _trajectory_advantage(rewards, normalize_std, eps)


@register("tgrpo", config_keys={"alpha1": "tgrpo_alpha_step", "alpha2": "tgrpo_alpha_traj",
                                **_NORM_KEYS})
def tgrpo(
    rewards: Group,
    *,
    alpha1: float = 1.0,
    alpha2: float = 1.0,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> Group:
    """TGRPO (arXiv 2506.08440): alpha1 * step advantage + alpha2 * trajectory advantage.

    Step advantage at decision t: rewards[.][t] normalized across the episodes that have a
    decision t (an index reached by one episode only gets 0).
    """
    _check_common("tgrpo", eps, normalize_std)
    step = [np.zeros(len(r)) for r in rewards]
    for t in range(max(len(r) for r in rewards)):
        idx = [i for i, r in enumerate(rewards) if len(r) > t]
        norm = _normalize(np.array([rewards[i][t] for i in idx]), normalize_std, eps)
        for i, a in zip(idx, norm, strict=True):
            step[i][t] = a
    traj = _trajectory_advantage(rewards, normalize_std, eps)
    return [alpha1 * s + alpha2 * e for s, e in zip(step, traj, strict=True)]


GIGPO_MODES = ("mean_norm", "mean_std_norm")


def _verl_normalize(x: np.ndarray, stats_of: np.ndarray, mode: str, eps: float,
                    singleton_mean: float) -> np.ndarray:
    """verl-agent's group normalization of x with the statistics of `stats_of`: x - mean
    (mean_norm) or (x - mean) / (std + eps) with the unbiased std (mean_std_norm); a group
    of one uses mean `singleton_mean` (0 for the episode term, the value itself for anchor
    groups) and std 1."""
    if len(stats_of) == 1:
        mean, std = singleton_mean, 1.0
    else:
        mean, std = stats_of.mean(), stats_of.std(ddof=1)
    return x - mean if mode == "mean_norm" else (x - mean) / (std + eps)


@register("gigpo", config_keys={"omega": "gigpo_step_weight", "eps": "adv_eps"})
def gigpo(
    rewards: Group,
    *,
    obs_keys: Sequence[Sequence[Hashable]],
    omega: float = 1.0,
    gamma: float = 0.95,
    mode: str = "mean_norm",
    cross_steps: bool = True,
    eps: float = 1e-6,
) -> Group:
    """GiGPO as verl-agent's `compute_gigpo_outcome_advantage` computes it.

    Episode term: the episode return R_i normalized over the group, counting each episode
    once per decision it has (cross_steps=True, verl-agent's default) or once
    (cross_steps=False). Step term: `obs_keys[i][t]` (hashable key of decision t's
    observation) groups equal observations across the group into anchor groups, whose
    discounted returns-to-go are normalized within it (singletons get 0). Both terms use
    `mode`: "mean_norm" (verl-agent's default, no std) or "mean_std_norm" (unbiased std).
    A_{i,t} = episode_i + omega * step_{i,t}.
    """
    _check(eps >= 0, "gigpo", f"eps must be >= 0, got {eps}")
    _check(0.0 < gamma <= 1.0, "gigpo", f"gamma must be in (0, 1], got {gamma}")
    _check(mode in GIGPO_MODES, "gigpo", f"mode must be one of {GIGPO_MODES}, got {mode!r}")
    _check(isinstance(cross_steps, (bool, np.bool_)), "gigpo",
           f"cross_steps must be a bool, got {cross_steps!r}")
    _check(
        len(obs_keys) == len(rewards),
        "gigpo",
        f"obs_keys has {len(obs_keys)} episodes, rewards has {len(rewards)}",
    )
    anchors: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)
    for i, (r, keys) in enumerate(zip(rewards, obs_keys, strict=True)):
        _check(
            len(keys) == len(r),
            "gigpo",
            f"obs_keys[{i}] has {len(keys)} entries, rewards[{i}] has {len(r)}",
        )
        for t, k in enumerate(keys):
            anchors[k].append((i, t))
    rtg = [discounted_return_to_go(r, gamma) for r in rewards]
    step = [np.zeros(len(r)) for r in rewards]
    for members in anchors.values():
        g = np.array([rtg[i][t] for i, t in members])
        for (i, t), a in zip(members, _verl_normalize(g, g, mode, eps, g[0]), strict=True):
            step[i][t] = a
    returns = np.array([r.sum() for r in rewards])
    counted = np.repeat(returns, [len(r) for r in rewards]) if cross_steps else returns
    episode = _verl_normalize(returns, counted, mode, eps, 0.0)
    return [e + omega * s for e, s in zip(episode, step, strict=True)]


def gae(
    rewards: Sequence[Any], values: Sequence[Any], gamma: float = 0.99, lam: float = 0.95
) -> tuple[Group, Group]:
    """Generalized advantage estimation per episode -> (advantages, returns = adv + values).

    values[i] has H_i + 1 entries: V(s_0..s_{H_i-1}) and the bootstrap value of the state
    after the last decision (pass 0 there if the episode terminated).
    """
    rewards = _as_group(rewards, "rewards")
    values = _as_group(values, "values")
    _check(0.0 < gamma <= 1.0, "ppo", f"gamma must be in (0, 1], got {gamma}")
    _check(0.0 <= lam <= 1.0, "ppo", f"lam must be in [0, 1], got {lam}")
    _check(
        len(values) == len(rewards),
        "ppo",
        f"values has {len(values)} episodes, rewards has {len(rewards)}",
    )
    advs, rets = [], []
    for i, (r, v) in enumerate(zip(rewards, values, strict=True)):
        _check(
            len(v) == len(r) + 1,
            "ppo",
            f"values[{i}] must have H_i + 1 = {len(r) + 1} entries, got {len(v)}",
        )
        delta = r + gamma * v[1:] - v[:-1]
        a = discounted_return_to_go(delta, gamma * lam)
        advs.append(a)
        rets.append(a + v[:-1])
    return advs, rets


@register("ppo", config_keys={"lam": "gae_lambda"})
def ppo(rewards: Group, *, values: Sequence[Any], gamma: float = 0.99, lam: float = 0.95) -> Group:
    """PPO advantages by GAE (see `gae`; value targets are adv + values[:-1])."""
    return gae(rewards, values, gamma, lam)[0]


@register("ppo_cot", config_keys={"lam": "gae_lambda"})
def ppo_cot(rewards: Group, *, values: Sequence[Any], gamma: float = 0.99,
            lam: float = 0.95) -> Group:
    """RL4VLM's PPO with a chain of thought: the same GAE advantages as `ppo`; what differs
    is the action log-likelihood (train/rl.py weights thought tokens by cot_lambda)."""
    return gae(rewards, values, gamma, lam)[0]
