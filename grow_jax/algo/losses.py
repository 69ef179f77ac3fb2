"""Policy and value losses (pure JAX, jittable) shared by every advantage estimator.

Shapes: B samples (one model call each for GROW; one whole conversation for trajectory
GRPO) by T tokens; ``mask`` is 1 on the action tokens whose logprobs are trained, 0 on
prompt and padding. Formulas: docs/algorithms.md.
"""

from __future__ import annotations

from numbers import Number

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token_mean", "sample_mean")


def masked_mean(x: jax.Array, mask: jax.Array, aggregation: str = "token_mean") -> jax.Array:
    """Mean of x over mask > 0.

    token_mean: sum over all masked tokens / number of masked tokens.
    sample_mean: mean over samples (rows with at least one masked token) of the per-row
    masked mean, so every sample weighs the same however many tokens it has.
    Returns 0 when the mask is empty.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    on = mask > 0
    x = jnp.where(on, x, 0.0)
    if aggregation == "token_mean":
        return jnp.sum(x) / jnp.maximum(jnp.sum(on), 1)
    count = jnp.sum(on, axis=-1)
    per_sample = jnp.sum(x, axis=-1) / jnp.maximum(count, 1)
    valid = count > 0
    return jnp.sum(jnp.where(valid, per_sample, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def _is_zero(c) -> bool:
    return isinstance(c, Number) and c == 0


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    ref_logprobs: jax.Array | None = None,
    aggregation: str = "token_mean",
    entropy: jax.Array | None = None,
    entropy_coef: float = 0.0,
    entropy_floor: float = 0.0,
    entropy_floor_coef: float = 0.0,
    entropy_mask: jax.Array | None = None,
    token_weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped-ratio surrogate + optional k3 KL to a reference - optional entropy bonus.

    Args:
      logprobs: [B, T] log pi_theta of the taken tokens (differentiated).
      old_logprobs: [B, T] behaviour-policy logprobs from the sampler.
      advantages: [B] (one per sample) or [B, T] (per token).
      mask: [B, T], > 0 on trained action tokens.
      clip_low, clip_high: ratio clipped to [1 - clip_low, 1 + clip_high].
      kl_coef: weight of the k3 KL estimate exp(ref - logp) - (ref - logp) - 1;
        non-zero needs ref_logprobs.
      ref_logprobs: [B, T] logprobs of the frozen reference model, or None.
      aggregation: "token_mean" or "sample_mean" (see `masked_mean`), for every term.
      entropy: [B, T] per-token policy entropy (e.g. `token_entropy`), or None.
      entropy_coef: weight of the entropy bonus; non-zero needs entropy.
      entropy_floor, entropy_floor_coef: a hinge entropy_floor_coef * mean(max(0,
        entropy_floor - entropy)) over the tokens of `entropy_mask`: acts only on tokens whose
        entropy (nats) fell below the floor, so a sharp policy keeps exploring while the
        others are left alone. Non-zero coef needs entropy.
      entropy_mask: [B, T] tokens the hinge covers (default: `mask`); leave out tokens a
        grammar forces (one allowed token: entropy 0 whatever the params, always "below"
        the floor). The linear bonus needs no such mask: a forced token adds 0 to it.
      token_weights: [B, T] weights of each token's policy-gradient term, or None (all 1);
        ppo_cot gives chain-of-thought tokens cot_lambda and action tokens 1.

    Returns:
      (loss, metrics) with metrics loss, pg_loss, kl, clip_frac, ratio_mean, approx_kl
      (k3 estimate of KL(old || new)), entropy when given and entropy_hinge when the floor
      is on. clip_frac, ratio_mean and
      approx_kl are token means whatever the aggregation.
    """
    if logprobs.ndim != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            f"policy_loss: logprobs {logprobs.shape}, old_logprobs {old_logprobs.shape} and "
            f"mask {mask.shape} must all be [B, T]"
        )
    if advantages.shape not in (logprobs.shape[:1], logprobs.shape):
        raise ValueError(
            f"policy_loss: advantages {advantages.shape} must be [B] or [B, T] with "
            f"[B, T] = {logprobs.shape}"
        )
    if ref_logprobs is None and not _is_zero(kl_coef):
        raise ValueError("policy_loss: kl_coef != 0 needs ref_logprobs")
    if entropy is None and not (_is_zero(entropy_coef) and _is_zero(entropy_floor_coef)):
        raise ValueError("policy_loss: entropy_coef / entropy_floor_coef != 0 needs entropy")
    for name, x in (("ref_logprobs", ref_logprobs), ("entropy", entropy),
                    ("entropy_mask", entropy_mask), ("token_weights", token_weights)):
        if x is not None and x.shape != logprobs.shape:
            raise ValueError(f"policy_loss: {name} {x.shape} must match logprobs {logprobs.shape}")

    on = mask > 0
    adv = advantages[:, None] if advantages.ndim == 1 else advantages
    agg = lambda x: masked_mean(x, mask, aggregation)  # noqa: E731
    tok = lambda x: masked_mean(x, mask, "token_mean")  # noqa: E731

    # Padding may hold garbage (e.g. -inf); zero it before exp so gradients stay finite.
    log_ratio = jnp.where(on, logprobs - old_logprobs, 0.0)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = -jnp.minimum(ratio * adv, clipped * adv)
    pg_loss = agg(pg if token_weights is None else pg * token_weights)
    loss = pg_loss

    if ref_logprobs is None:
        kl = jnp.zeros((), logprobs.dtype)
    else:
        d = jnp.where(on, ref_logprobs - logprobs, 0.0)
        kl = agg(jnp.exp(d) - d - 1.0)
        loss = loss + kl_coef * kl

    clip_active = ((adv > 0) & (ratio > 1.0 + clip_high)) | ((adv < 0) & (ratio < 1.0 - clip_low))
    metrics = {
        "pg_loss": pg_loss,
        "kl": kl,
        "clip_frac": tok(clip_active.astype(logprobs.dtype)),
        "ratio_mean": tok(ratio),
        "approx_kl": tok(ratio - 1.0 - log_ratio),
    }
    if entropy is not None:
        ent = agg(entropy)
        loss = loss - entropy_coef * ent
        metrics["entropy"] = ent
        if not _is_zero(entropy_floor_coef):
            emask = mask if entropy_mask is None else mask * entropy_mask
            hinge = masked_mean(jnp.maximum(entropy_floor - entropy, 0.0), emask, aggregation)
            loss = loss + entropy_floor_coef * hinge
            metrics["entropy_hinge"] = hinge
    metrics["loss"] = loss
    return loss, metrics


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    mask: jax.Array,
    *,
    clip: float | None = 0.2,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2).

    V_clip = V_old + clip(V - V_old, -clip, clip).
    All arrays share one shape (e.g. [B] for one value per decision); masked token mean.
    clip=None gives the plain 0.5 * (V - R)^2.
    """
    if not (values.shape == old_values.shape == returns.shape == mask.shape):
        raise ValueError(
            f"value_loss: values {values.shape}, old_values {old_values.shape}, returns "
            f"{returns.shape} and mask {mask.shape} must have one shape"
        )
    err = jnp.square(values - returns)
    if clip is None:
        per, clip_frac = 0.5 * err, jnp.zeros((), values.dtype)
    else:
        v_clip = old_values + jnp.clip(values - old_values, -clip, clip)
        err_clip = jnp.square(v_clip - returns)
        per = 0.5 * jnp.maximum(err, err_clip)
        clip_frac = masked_mean((err_clip > err).astype(values.dtype), mask)
    loss = masked_mean(per, mask)
    return loss, {"vf_loss": loss, "vf_clip_frac": clip_frac}


def suppress_tokens(logits: jax.Array, token_ids: tuple[int, ...]) -> jax.Array:
    """Sets the logits of `token_ids` to -inf: the policy can never emit them.

    Used identically by the sampler and the train step, so behaviour and recomputed
    log-probabilities describe the same distribution. Vision placeholders
    (<|image_pad|>, ...) are suppressed: a sampled one would be read as an image slot.
    """
    if not token_ids:
        return logits
    return logits.at[..., jnp.asarray(token_ids, jnp.int32)].set(-jnp.inf)


def constrain_logits(logits: jax.Array, suppress_token_ids: tuple[int, ...] = (),
                     grammar=None, prev_ids: jax.Array | None = None) -> jax.Array:
    """f32 logits with the suppressed tokens and, given an `algo.grammar.TokenGrammar`, every
    token it forbids after `prev_ids` (the token before each position) at -inf. The
    sampler, the RL loss, SFT and the KL reference all call it, so they share one support."""
    x = suppress_tokens(logits.astype(jnp.float32), suppress_token_ids)
    if grammar is not None:
        if prev_ids is None:
            raise ValueError("constrain_logits: a grammar needs prev_ids")
        x = grammar.apply(x, prev_ids)
    return x


def filter_logits(scaled: jax.Array, top_k: int = 0, top_p: float = 1.0,
                  always_keep: jax.Array | None = None) -> jax.Array:
    """Top-k then top-p (nucleus) filter over the last axis: -inf outside the kept set.

    The sampler draws from softmax of the result and stores its log-probability; the train
    step recomputes it with `always_keep` = the sampled tokens, so a token that leaves the
    new policy's top-k/top-p set after an update keeps a small, finite probability (its
    ratio falls below 1 - clip_low, where PPO's clipping takes over) instead of ratio 0 and
    an infinite log-ratio. Before any update the kept sets are the same (the sampled token
    is in its set), so the first ratio is exactly 1. docs/algorithms.md, "Behaviour
    log-probabilities".
    """
    filt = scaled
    if top_k:
        kth = jax.lax.top_k(filt, top_k)[0][..., -1:]
        filt = jnp.where(filt < kth, -jnp.inf, filt)
    if top_p < 1.0:
        srt = jnp.sort(filt, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(srt, axis=-1), axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        idx = jnp.minimum(jnp.sum(cum < top_p, axis=-1, keepdims=True), srt.shape[-1] - 1)
        filt = jnp.where(filt < jnp.take_along_axis(srt, idx, axis=-1), -jnp.inf, filt)
    if always_keep is not None and (top_k or top_p < 1.0):
        hit = jnp.arange(scaled.shape[-1]) == always_keep[..., None].astype(jnp.int32)
        filt = jnp.where(hit, scaled, filt)
    return filt


def policy_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, suppress_token_ids: tuple[int, ...] = (),
                  always_keep: jax.Array | None = None, grammar=None,
                  prev_ids: jax.Array | None = None) -> jax.Array:
    """Logits of the rollout policy: suppressed tokens and grammar (`constrain_logits`),
    / temperature, top-k/top-p filter.

    One function for the sampler and the train step, so the stored behaviour
    log-probability and the recomputed one describe the same distribution.
    """
    if temperature <= 0:
        raise ValueError(f"policy_logits: temperature must be > 0, got {temperature}")
    x = constrain_logits(logits, suppress_token_ids, grammar, prev_ids)
    if temperature != 1.0:
        x = x / temperature
    return filter_logits(x, top_k, top_p, always_keep)


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log softmax(logits)[..., target], in f32, without materializing the full log-softmax.

    logits [..., V], targets [...] integer ids -> [...].
    """
    x = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(x, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(x, axis=-1)


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy -sum p log p of softmax(logits) over the last axis, in f32 (-inf logits ok)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(p * jnp.where(p > 0, logp, 0.0), axis=-1)
