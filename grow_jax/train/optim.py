"""The optimizer: AdamW, global-norm clipping, warmup + cosine, optional frozen vision tower."""

from __future__ import annotations

import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine decay to `lr * final_lr_ratio` (or constant).

    warmup_steps=0 means no warmup: the first update already uses `lr`.
    """
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
    if cfg.warmup_steps <= 0:
        if cfg.schedule == "constant":
            return optax.constant_schedule(cfg.lr)
        return optax.cosine_decay_schedule(cfg.lr, max(cfg.total_steps, 1),
                                           alpha=cfg.final_lr_ratio)
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps),
             optax.constant_schedule(cfg.lr)], [cfg.warmup_steps])
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup_steps, max(cfg.total_steps, cfg.warmup_steps + 1),
        end_value=cfg.lr * cfg.final_lr_ratio)


def rl_total_updates(config) -> int:
    """Upper bound on an RL run's optimizer updates (the cosine schedule's length).

    iterations x epochs x ceil(decisions per iteration at the episode cap / minibatch):
    the count when no sample is dropped and no epoch stops early. Runs that drop
    zero-advantage samples or stop early do fewer updates and so end above the floor.
    """
    r = config.rl
    decisions = r.groups_per_iter * r.group_size * config.env.max_steps
    return r.iterations * r.epochs * -(-decisions // max(r.minibatch_size, 1))


def _is_vision(path) -> bool:
    return any(str(getattr(k, "key", getattr(k, "name", k))) in ("visual", "vision")
               for k in path)


def make_optimizer(cfg, params) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; vision-tower params frozen if cfg.freeze_vision."""
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                    weight_decay=cfg.weight_decay),
    )
    if not cfg.freeze_vision:
        return tx
    import jax

    labels = jax.tree_util.tree_map_with_path(
        lambda p, _: "frozen" if _is_vision(p) else "train", params)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
