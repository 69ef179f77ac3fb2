"""Per-iteration stability diagnostics of RL training, and KL-based early stopping.

Two pieces, both host-side and cheap, called from the trainer's iteration loop:

- `rollout_diagnostics(trajs, algo_cfg)`: how much the policy still explores (entropy of
  the sampled action tokens, estimated as -mean behaviour logprob: an unbiased estimate of
  the entropy of the sampling distribution) and how much learning signal the groups carry
  (fraction of uniform-outcome groups, whose GROW advantages come only from discount
  differences; the advantage spread inside all-success groups).
- `UpdateLog`: the metrics of every epoch call of one iteration, averaged over all of them
  (not only the last), the largest epoch approx_kl, and the PPO-style early stop: once an
  epoch's mean approx_kl exceeds `target_kl`, the remaining epochs are skipped.
"""

from __future__ import annotations

import numpy as np

from grow_jax.rollout.types import Trajectory, group_trajectories


def rollout_diagnostics(trajs: list[Trajectory], algo_cfg, samples=()) -> dict:
    """Entropy estimates and group-outcome statistics of one iteration's rollout, and the
    tokens of its training samples (`sample_tokens`: each epoch trains on all of them)."""
    from grow_jax.train.rl import VALUE_ESTIMATORS, group_advantages

    first, every = [], []
    for tr in trajs:
        for s in tr.steps:
            if len(s.logprobs):
                first.append(float(s.logprobs[0]))
                every.append(s.logprobs)
    out = dict(
        # entropy (nats) of the first action token (the action word): -E[log p(sampled)]
        action_entropy=float(-np.mean(first)) if first else 0.0,
        token_nll=float(-np.concatenate(every).mean()) if every else 0.0,
        sample_tokens=int(sum(s.length for s in samples)),
    )
    n_groups = n_fail = n_success = 0
    success_adv, success_first = [], []
    for group in group_trajectories(trajs):
        group = [tr for tr in group if tr.length]
        if not group:
            continue
        n_groups += 1
        returns = np.array([tr.episode_return for tr in group])
        wins = np.array([tr.success for tr in group])
        if wins.all():
            n_success += 1
            if algo_cfg.name in VALUE_ESTIMATORS:  # advantages need the value head's pass
                continue
            advs = group_advantages(group, algo_cfg)
            success_adv.append(np.concatenate(advs))
            success_first += [float(a[0]) for a in advs]
        elif not wins.any() and np.all(returns == returns[0]):
            n_fail += 1
    n = max(n_groups, 1)
    out.update(frac_groups_all_fail=n_fail / n, frac_groups_all_success=n_success / n,
               frac_groups_uniform=(n_fail + n_success) / n)
    if success_adv:
        a = np.concatenate(success_adv)
        out.update(success_group_adv_abs=float(np.abs(a).mean()),
                   success_group_adv_min=float(a.min()),
                   success_group_first_adv=float(np.mean(success_first)))
    return out


class UpdateLog:
    """Collects one iteration's epoch-call metrics; decides KL early stopping.

    `add(metrics)` takes one `Learner.step` result (means over that epoch's updates) and
    returns True when training on this iteration should stop (target_kl > 0 and the
    epoch's mean approx_kl exceeded it, or the step's per-minibatch check, at 1.5 x
    target_kl, halted some of its updates). `summary()` gives every metric averaged over all
    epochs done (each epoch has the same number of updates, so this is the mean over all
    updates), approx_kl_max (largest epoch mean), epochs_done and early_stopped.
    """

    def __init__(self, target_kl: float = 0.0):
        if target_kl < 0:
            raise ValueError(f"config error: rl.target_kl must be >= 0 (0 disables), got "
                             f"{target_kl}")
        self.target_kl = target_kl
        self.epochs: list[dict] = []
        self.stopped = False

    def add(self, metrics: dict) -> bool:
        m = {k: float(np.asarray(v)) for k, v in metrics.items()}
        self.epochs.append(m)
        kl = m.get("approx_kl", 0.0)
        self.stopped = bool(self.target_kl > 0 and (kl > self.target_kl
                                                    or m.get("kl_stopped_updates", 0) > 0))
        return self.stopped

    @property
    def epochs_done(self) -> int:
        return len(self.epochs)

    def summary(self) -> dict:
        if not self.epochs:
            return dict(epochs_done=0, early_stopped=False)
        out = {k: float(np.mean([e[k] for e in self.epochs])) for k in self.epochs[0]}
        for count in ("kl_stopped_updates", "kl_backtracks"):  # KL stops, step halvings
            if count in out:
                out[count] = int(sum(e[count] for e in self.epochs))
        if "approx_kl" in out:
            out["approx_kl_max"] = max(e["approx_kl"] for e in self.epochs)
            out["approx_kl_last"] = self.epochs[-1]["approx_kl"]
        out.update(epochs_done=self.epochs_done, early_stopped=self.stopped)
        return out
