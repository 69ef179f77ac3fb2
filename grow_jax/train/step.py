"""The pure, sharded train step shared by GROW, every baseline and SFT.

`train_step(state, batches) -> (state, metrics)` runs M optimizer updates in one jitted
`lax.scan` (M minibatches of one rollout, each optionally accumulated over A
micro-batches), so a whole epoch costs one dispatch. It is compiled with `jax.jit` and
explicit in/out shardings and donates the state it replaces.

Batches come from `grow_jax.data.samples.collate` stacked to leading dims [M, A]; the
model computes logits only at the action-token positions (`target_pos`), which is what
makes state-action samples cheap.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from grow_jax import distributed
from grow_jax.algo import losses
from grow_jax.train import fixed_order, value_head

BATCH_AXES = ("data", "fsdp")
# Which dimension of each micro-batch array is the batch (or patch) dimension.
_BATCH_DIM = dict(input_ids=0, attention_mask=0, position_ids=1, pixel_values=0,
                  vision_pos_ids=0, vision_segment_ids=0, target_pos=0, targets=0,
                  loss_mask=0, old_logprobs=0, advantages=0, ref_logprobs=0, old_values=0,
                  returns=0, token_weights=0, segment_ids=0, target_slot=0)


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs from the learner: params, optimizer, counters, RNG."""

    params: Any  # nnx.State of the model's nnx.Param leaves (f32 master weights)
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer updates done
    rng: jax.Array  # PRNG key, split once per update
    value: Any = None  # PPO value head params (train/value_head.py), or None
    value_opt_state: Any = None  # its optimizer state


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static loss settings (part of the compile key)."""

    kind: str = "policy"  # "policy" (clipped surrogate) | "sft" (cross-entropy on actions)
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    entropy_floor: float = 0.0  # nats; with entropy_floor_coef: hinge below it (losses)
    entropy_floor_coef: float = 0.0
    aggregation: str = "token_mean"
    suppress_token_ids: tuple[int, ...] = ()  # the sampler's: same distribution in both
    grammar: Any = None  # the sampler's algo.grammar.TokenGrammar (algo.action_tokens_only)
    # The rollout sampler's settings (policy kind): logprobs are recomputed from
    # losses.policy_logits exactly as sampled. SFT trains the raw model (T = 1, no filter).
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    value_coef: float = 0.0  # PPO: weight of the clipped value loss (needs a value head)
    value_clip: float = 0.2  # PPO: value clip range around V_old
    # > 0: inside one fused epoch call, an update whose minibatch shows approx_kl (of the
    # current params, before the update) above this, and every later one, is not applied
    # (SB3's per-minibatch check: rl.target_kl x 1.5)
    kl_stop: float = 0.0
    # > 0 (with kl_stop): look ahead too. An update that would leave its own minibatch at
    # approx_kl > kl_stop is halved, up to this many times, and not applied if it still
    # would (then it stops the call like the check above); one extra forward per update
    kl_backtracks: int = 0

    def __post_init__(self):
        if self.kind not in ("policy", "sft"):
            raise ValueError(f"loss kind must be 'policy' or 'sft', got {self.kind!r}")
        if self.kl_backtracks < 0:
            raise ValueError(f"LossConfig.kl_backtracks must be >= 0, got {self.kl_backtracks}")
        if self.kl_backtracks and not self.kl_stop:
            raise ValueError("LossConfig.kl_backtracks needs kl_stop > 0 (rl.target_kl)")
        if self.kind == "policy" and self.temperature <= 0:
            raise ValueError(f"LossConfig.temperature must be > 0 (the rollout sampler's "
                             f"agent.temperature), got {self.temperature}")


def action_hidden(model, mb: dict) -> jax.Array:
    """Final hidden states [B, K, D] at the positions that predict action tokens (the
    first is the last prompt position, where the value head reads); a packed batch
    (grow_jax.data.packing) computes them per row and `target_slot` picks each sample's."""
    image_embeds = None
    if mb["pixel_values"].shape[0]:
        image_embeds = model.encode_images(mb["pixel_values"], mb["vision_pos_ids"],
                                           mb["vision_segment_ids"])
    hidden = model.hidden_states(mb["input_ids"], mb["position_ids"], mb["attention_mask"],
                                 image_embeds=image_embeds, logits_at=mb["target_pos"],
                                 segment_ids=mb.get("segment_ids"))[0]
    if "target_slot" in mb:
        hidden = hidden.reshape(-1, hidden.shape[-1])[mb["target_slot"]]
    return hidden


def action_logits(model, mb: dict) -> jax.Array:
    """Logits [B, K, V] at the positions that predict action tokens."""
    return model.output_logits(action_hidden(model, mb))


def constrained_logits(raw: jax.Array, mb: dict, cfg: LossConfig) -> jax.Array:
    """`raw` action logits [B, K, V] under the rollout policy's suppressed tokens and grammar;
    the token before each target is the one at its `target_pos` (in a packed batch, per
    row, then picked per sample by `target_slot` as in `action_hidden`)."""
    prev = None
    if cfg.grammar is not None:
        prev = jnp.take_along_axis(mb["input_ids"], mb["target_pos"], axis=1)
        if "target_slot" in mb:
            prev = prev.reshape(-1)[mb["target_slot"]]
    return losses.constrain_logits(raw, cfg.suppress_token_ids, cfg.grammar, prev)


def _loss(params, rest, graphdef, cfg: LossConfig, mb: dict):
    """Loss of one micro-batch; `params` is (model params, value head) when value_coef."""
    head = None
    if cfg.value_coef:
        params, head = params
    model = nnx.merge(graphdef, params, rest)
    hidden = action_hidden(model, mb)
    raw = model.output_logits(hidden)
    mask = mb["loss_mask"]
    if cfg.kind == "sft":
        logits = constrained_logits(raw, mb, cfg)
        loss = -losses.masked_mean(losses.token_logprobs(logits, mb["targets"]), mask,
                                   cfg.aggregation)
        return loss, {"loss": loss, "nll": loss}
    logits = losses.policy_logits(constrained_logits(raw, mb, cfg),
                                  temperature=cfg.temperature, top_k=cfg.top_k,
                                  top_p=cfg.top_p, always_keep=mb["targets"])
    logp = losses.token_logprobs(logits, mb["targets"])
    entropy = free = None
    if cfg.entropy_coef or cfg.entropy_floor_coef:
        entropy = losses.token_entropy(logits)
    if cfg.entropy_floor_coef:  # the hinge skips a token the grammar/filter forces (1 logit)
        free = (jnp.sum(jnp.isfinite(logits), axis=-1) > 1).astype(mask.dtype)
    loss, metrics = losses.policy_loss(
        logp, mb["old_logprobs"], mb["advantages"], mask, clip_low=cfg.clip_low,
        clip_high=cfg.clip_high, kl_coef=cfg.kl_coef, ref_logprobs=mb.get("ref_logprobs"),
        aggregation=cfg.aggregation, entropy=entropy, entropy_coef=cfg.entropy_coef,
        entropy_floor=cfg.entropy_floor, entropy_floor_coef=cfg.entropy_floor_coef,
        entropy_mask=free, token_weights=mb.get("token_weights"))
    if head is None:
        return loss, metrics
    values = value_head.apply(head, hidden[:, 0])
    rows = jnp.any(mask > 0, axis=-1).astype(jnp.float32)
    vf, vm = losses.value_loss(values, mb["old_values"][:, 0], mb["returns"][:, 0], rows,
                               clip=cfg.value_clip)
    loss = loss + cfg.value_coef * vf
    return loss, {**metrics, **vm, "loss": loss}


def _weight(mask: jax.Array, aggregation: str) -> jax.Array:
    """What a micro-batch's mean loss averages over: its real tokens (token_mean) or its
    samples with at least one real token (sample_mean)."""
    on = mask > 0
    return jnp.sum(on) if aggregation == "token_mean" else jnp.sum(jnp.any(on, axis=-1))


def weighted_sums(params, micro_batches: dict, *, graphdef, rest, cfg, grad: bool = True):
    """(sum of w * gradient, sum of w * metrics, sum of w, real rows) over A micro-batches
    (leading axis A), w being each micro-batch's `_weight`; without `grad` a forward only,
    and the gradient sum is None."""
    grad_fn = jax.value_and_grad(_loss, has_aux=True)

    def one(mb):
        if grad:
            (_, m), g = grad_fn(params, rest, graphdef, cfg, mb)
        else:
            (_, m), g = _loss(params, rest, graphdef, cfg, mb), None
        w = _weight(mb["loss_mask"], cfg.aggregation).astype(jnp.float32)
        return jax.tree.map(lambda x: x * w, g), jax.tree.map(lambda x: x * w, m), w

    def accumulate(carry, mb):
        return jax.tree.map(jnp.add, carry, one(mb)), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    rest_mbs = jax.tree.map(lambda x: x[1:], micro_batches)
    (grads, metrics, total), _ = jax.lax.scan(accumulate, one(first), rest_mbs)
    real_rows = jnp.sum(jnp.any(micro_batches["loss_mask"] > 0, axis=-1))
    return grads, metrics, total, real_rows


def update_grads(params, micro_batches: dict, *, graphdef, rest, cfg, fixed=False):
    """Gradient and metrics of one update from A micro-batches (leading axis A).

    Accumulation sums each micro-batch's gradient times its weight (`_weight`) and divides
    by the total weight, so A micro-batches give exactly the gradient of one batch of all
    their rows, and all-padding micro-batches add nothing. The result is then scaled by
    the fraction of real rows in the update (real / (A * B)): an epoch's last, partial
    update counts as much as the samples it holds, not as a full-size update
    (docs/algorithms.md, "Minibatch weighting"). `fixed`: called per device inside
    `fixed_order.sharded_step`, the sums are added over the devices in a fixed order.
    """
    grads, metrics, total, real_rows = weighted_sums(params, micro_batches, graphdef=graphdef,
                                                     rest=rest, cfg=cfg)
    rows = micro_batches["loss_mask"].shape[0] * micro_batches["loss_mask"].shape[1]  # A * B
    if fixed:  # inside fixed_order.sharded_step: this device's rows
        grads, metrics, total, real_rows = fixed_order.ordered_sum(
            (grads, metrics, total, real_rows))
        rows *= jax.lax.axis_size(fixed_order.MESH_AXES)
    real = real_rows / rows
    denom = jnp.maximum(total, 1.0)
    grads = jax.tree.map(lambda g: g * (real / denom), grads)
    metrics = jax.tree.map(lambda m: m / denom, metrics)
    return grads, metrics


def update_metrics(params, micro_batches: dict, *, graphdef, rest, cfg, fixed=False):
    """The loss metrics of one update's micro-batches at `params` (forward only), weighted
    as `update_grads` weights them."""
    _, metrics, total, _ = weighted_sums(params, micro_batches, graphdef=graphdef, rest=rest,
                                         cfg=cfg, grad=False)
    if fixed:
        metrics, total = fixed_order.ordered_sum((metrics, total))
    return jax.tree.map(lambda m: m / jnp.maximum(total, 1.0), metrics)


def _kl_backtrack(params, value, updates, micro_batches: dict, halted, *, graphdef, rest,
                  cfg, fixed):
    """(scale, halvings, accepted): the largest of 1, 1/2, ... (cfg.kl_backtracks halvings)
    at which `updates` leaves its own minibatch at approx_kl <= cfg.kl_stop. The KL stop
    measures before an update, so on its own it lets one large step through; this measures
    after. Skipped (nothing computed) when the call is already `halted`."""

    def kl_at(scale):
        p = optax.apply_updates(params, jax.tree.map(lambda u: u * scale, updates))
        return update_metrics((p, value) if value is not None else p, micro_batches,
                              graphdef=graphdef, rest=rest, cfg=cfg, fixed=fixed)["approx_kl"]

    def search(_):
        def cond(c):
            _, n, kl = c
            return (kl > cfg.kl_stop) & (n < cfg.kl_backtracks)

        def body(c):
            scale, n, _ = c
            return scale / 2, n + 1, kl_at(scale / 2)

        one = jnp.ones((), jnp.float32)
        scale, n, kl = jax.lax.while_loop(cond, body, (one, jnp.zeros((), jnp.int32),
                                                       kl_at(one)))
        return scale, n, kl <= cfg.kl_stop

    skip = lambda _: (jnp.ones((), jnp.float32), jnp.zeros((), jnp.int32),  # noqa: E731
                      jnp.ones((), bool))
    return jax.lax.cond(halted, skip, search, None)


def _update(state: TrainState, micro_batches: dict, *, graphdef, rest, tx, cfg,
            value_tx=None, halted=False, fixed=False):
    """One optimizer update from A accumulated micro-batches (leading axis A); the state is
    kept when `halted` or when the minibatch's approx_kl, measured before it, exceeds
    `cfg.kl_stop`; with `cfg.kl_backtracks` the step is also shrunk (or dropped) so that
    approx_kl measured after it stays within `cfg.kl_stop`."""
    with_value = state.value is not None
    grads, metrics = update_grads((state.params, state.value) if with_value else state.params,
                                  micro_batches, graphdef=graphdef, rest=rest, cfg=cfg,
                                  fixed=fixed)
    if cfg.kl_stop and cfg.kind == "policy":
        halted = halted | (metrics["approx_kl"] > cfg.kl_stop)
    metrics["kl_stopped_updates"] = jnp.asarray(halted, jnp.int32)
    value, value_opt = state.value, state.value_opt_state
    if with_value:
        grads, vgrads = grads
        vupd, value_opt = value_tx.update(vgrads, value_opt, value)
        value = optax.apply_updates(value, vupd)
    metrics["grad_norm"] = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if cfg.kl_backtracks and cfg.kind == "policy":
        scale, metrics["kl_backtracks"], accepted = _kl_backtrack(
            state.params, value if with_value else None, updates, micro_batches, halted,
            graphdef=graphdef, rest=rest, cfg=cfg, fixed=fixed)
        updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
        halted = halted | ~accepted
        metrics["kl_stopped_updates"] = jnp.asarray(halted, jnp.int32)
    params = optax.apply_updates(state.params, updates)
    rng, _ = jax.random.split(state.rng)
    return _skip_if_not_finite(state, TrainState(params, opt_state, state.step + 1, rng,
                                                     value, value_opt),
                               metrics, updates, halted)


def _skip_if_not_finite(old: TrainState, new: TrainState, metrics: dict, updates,
                        halted=False):
    """Numerical-fault guard (docs/reliability.md): a non-finite loss, gradient or update
    keeps the old state (params, optimizer, step, RNG, value head) and is counted in
    `skipped_updates`. A `halted` update (the KL stop) keeps the old state too."""
    ok = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
          & jnp.isfinite(optax.global_norm(updates)))
    state = jax.tree.map(lambda n, o: jnp.where(ok & ~halted, n, o), new, old)
    metrics["skipped_updates"] = jnp.logical_not(ok).astype(jnp.int32)
    return state, metrics


def train_step(state: TrainState, batches: dict, *, graphdef, rest, tx, cfg: LossConfig,
               value_tx=None, reduce_mesh=None):
    """M updates over `batches` (leading dims [M, A]); metrics are means over the M.

    With `cfg.kl_stop`, the first update whose minibatch measures approx_kl > kl_stop and
    all after it keep the state (`kl_stopped_updates` counts them); with
    `cfg.kl_backtracks` also the first whose step cannot be halved to stay within it
    (`kl_backtracks` counts the halvings). With `reduce_mesh`,
    the step runs on every device of it with gradients summed in a fixed order
    (train/fixed_order.py)."""
    kwargs = dict(graphdef=graphdef, rest=rest, tx=tx, cfg=cfg, value_tx=value_tx)
    if reduce_mesh is not None:
        return fixed_order.sharded_step(functools.partial(_train_step, fixed=True, **kwargs),
                                        reduce_mesh, _BATCH_DIM)(state, batches)
    return _train_step(state, batches, **kwargs)


def _train_step(state: TrainState, batches: dict, *, graphdef, rest, tx, cfg: LossConfig,
                value_tx=None, fixed=False):

    def body(carry, mbs):
        s, halted = carry
        s, m = _update(s, mbs, graphdef=graphdef, rest=rest, tx=tx, cfg=cfg,
                       value_tx=value_tx, halted=halted, fixed=fixed)
        return (s, m["kl_stopped_updates"] > 0), m

    (state, _), metrics = jax.lax.scan(body, (state, jnp.zeros((), bool)), batches)
    skipped = metrics.pop("skipped_updates")
    counts = {k: metrics.pop(k) for k in ("kl_stopped_updates", "kl_backtracks") if k in metrics}
    out = jax.tree.map(jnp.mean, metrics)
    out["skipped_updates"] = jnp.sum(skipped)  # updates skipped for a non-finite loss/grad
    out.update({k: jnp.sum(v) for k, v in counts.items()})  # KL stops, step halvings
    # length of the trailing run of skipped updates (the fault guard counts runs across calls)
    out["skipped_tail"] = jnp.sum(jnp.cumprod(skipped[::-1]))
    return state, out


def batch_shardings(mesh, batch: dict) -> dict:
    """NamedShardings for a stacked [M, A, ...] batch: the batch dim over (data, fsdp)."""

    n = mesh.shape["data"] * mesh.shape["fsdp"]

    def spec(key, x):
        axes = [None] * x.ndim
        dim = 2 + _BATCH_DIM[key]
        if x.shape[dim] and x.shape[dim] % n == 0:  # else replicated (e.g. odd patch counts)
            axes[dim] = BATCH_AXES
        return NamedSharding(mesh, P(*axes))

    return {k: spec(k, v) for k, v in batch.items()}


def opt_state_shardings(tx: optax.GradientTransformation, params, mesh):
    """Shardings for `tx.init(params)`: a leaf that mirrors a parameter (Adam moments: same
    shape, path ending in the parameter's path) is sharded like it; the rest is replicated."""
    by_path = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}

    def one(path, leaf):
        key = jax.tree_util.keystr(path)
        match = max((k for k, x in by_path.items() if key.endswith(k) and x.shape == leaf.shape),
                    key=len, default=None)
        return by_path[match].sharding if match else NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, jax.eval_shape(tx.init, params))


class Learner:
    """Holds the model's graph, the optimizer and the jitted step for one mesh.

    `learner.step(state, batches)` runs `train_step` compiled with the state's shardings
    as in/out shardings (donated) and batch shardings over (data, fsdp); `fixed_order`:
    the state is replicated and the gradients are summed over the devices in a fixed order
    (train/fixed_order.py, for batches collated with `BatchShape(shards=mesh.size)`).
    `init_state()`
    without params starts from the model's own arrays, which the first step donates: after
    it, use `learner.model(state)`, not the model object given here.
    """

    def __init__(self, model, tx: optax.GradientTransformation, cfg: LossConfig, mesh,
                 value_tx: optax.GradientTransformation | None = None,
                 fixed_order: bool = False):
        if (value_tx is None) != (not cfg.value_coef):
            raise ValueError("Learner: a value head (value_tx) goes with LossConfig.value_coef"
                             " > 0 and only with it")
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.tx, self.cfg, self.mesh, self.value_tx = tx, cfg, mesh, value_tx
        self.fixed_order = fixed_order  # mesh.fixed_order_reduce (train/fixed_order.py)
        self.hidden_size = model.config.text.hidden_size
        self._params_template = params
        self._compiled = {}

    def init_state(self, params=None, seed: int = 0) -> TrainState:
        """A fresh TrainState on the mesh (optimizer moments sharded like the params,
        counters and RNG replicated), so every leaf lives on the same devices."""
        params = self._params_template if params is None else params
        if self.fixed_order:  # the whole state on every device (train/fixed_order.py); a
            # jitted copy, not device_put: multi-process, device_put runs a per-leaf
            # cross-process equality check that can deadlock
            params = distributed.lockstep(jax.jit(
                lambda p: p, out_shardings=NamedSharding(self.mesh, P())))(params)
        opt_state = jax.jit(self.tx.init,
                            out_shardings=opt_state_shardings(self.tx, params, self.mesh))(params)
        rep = NamedSharding(self.mesh, P())
        value = value_opt = None
        if self.value_tx is not None:
            value = value_head.init(self.hidden_size, self.mesh)
            value_opt = jax.jit(self.value_tx.init, out_shardings=rep)(value)
        return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), rep),
                          jax.device_put(jax.random.key_data(jax.random.key(seed)), rep),
                          value, value_opt)

    def state_shardings(self, state: TrainState):
        return jax.tree.map(lambda x: x.sharding, state)

    def step(self, state: TrainState, batches: dict):
        key = tuple((k, v.shape) for k, v in sorted(batches.items()))
        if key not in self._compiled:
            st_sh = self.state_shardings(state)
            b_sh = batch_shardings(self.mesh, batches)
            fn = distributed.lockstep(jax.jit(
                functools.partial(train_step, graphdef=self.graphdef, rest=self.rest,
                                  tx=self.tx, cfg=self.cfg, value_tx=self.value_tx,
                                  reduce_mesh=self.mesh if self.fixed_order else None),
                in_shardings=(st_sh, b_sh), out_shardings=(st_sh, None), donate_argnums=0))
            self._compiled[key] = fn, b_sh
        fn, b_sh = self._compiled[key]
        return fn(state, distributed.global_batch(batches, b_sh))  # multi-process: global

    def model(self, state: TrainState):
        """The NNX model with the state's current params (for sampling and eval)."""
        return nnx.merge(self.graphdef, state.params, self.rest)


def chunk_batches(mesh, samples, minibatch: int, model_config, pad_id: int = 0):
    """(chunk, [1, 1, B, ...] device batch) per `minibatch` samples, one shape for all: the
    layout of the scoring passes (value head, reference and behaviour logprobs)."""
    from grow_jax.data.pipeline import stack_micro_batches
    from grow_jax.data.samples import BatchShape, collate

    shape = BatchShape.fit(samples, minibatch)
    for i in range(0, len(samples), minibatch):
        chunk = samples[i:i + minibatch]
        batch = stack_micro_batches([collate(chunk, shape, model_config, pad_id)], 1)
        yield chunk, distributed.put_batch(batch, batch_shardings(mesh, batch))
