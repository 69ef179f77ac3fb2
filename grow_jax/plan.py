"""Memory planner: per-device bytes of a config's train step and sampler, before renting chips.

    python -m grow_jax.plan --config=configs/qwen2_vl_7b_tpu.py [--accelerator=v5p] [--devices=N]

Figures per device, for the config's mesh and batch:
- parameters, AdamW's two moments (param dtype) and gradients: exact, from the model's
  parameter shapes and the logical-axis sharding rules (`grow_jax.sharding`);
- the update's input batch (one update of `rl.minibatch_size` samples);
- activations kept for the backward pass of one micro-batch, without and with
  `model.remat` (decoder layers recomputed; the vision tower is never recomputed);
- the update's new params + AdamW moments, built beside the old ones before the
  non-finite-update guard selects (the peak is the larger of this and the backward pass);
- the sampler's KV cache for one rollout batch (all of a process's envs at once).

Activations are a model of what the backward pass saves (per decoder layer: the residual
stream, norms, q/k/v, attention probabilities, MLP gates), not a trace; `xla_memory`
compiles the real train step (on fake CPU devices) and tests hold the two within 15%.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys

import numpy as np

ACCELERATORS_GIB = {"v5e": 16, "v5p": 95, "v6e": 32, "H100": 80, "H200": 141}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class BatchDims:
    """Static shape of one micro-batch (global, before sharding over data x fsdp)."""

    batch: int  # samples per micro-batch
    seq: int  # bucketed tokens per sample
    targets: int  # action-token slots per sample
    images: int  # image slots (batched layout: images of one grid)
    patches: int  # patches per image


@dataclasses.dataclass(frozen=True)
class MeshShape:
    data: int
    fsdp: int
    tensor: int

    @property
    def shape(self) -> dict:  # what AxisRules.spec reads from a mesh
        return {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.tensor


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@functools.lru_cache(maxsize=8)
def param_shapes(mcfg) -> tuple:
    """((shape, logical_axes), ...) of every parameter, without allocating it."""
    from flax import nnx

    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    model = nnx.eval_shape(lambda: Qwen2VL(mcfg, rngs=nnx.Rngs(0)))
    out = []
    for v in jax_leaves(nnx.state(model, nnx.Param)):
        out.append((tuple(v.get_value().shape), v.get_metadata().get("logical_axes")))
    return tuple(out)


def jax_leaves(state):
    import jax
    from flax import nnx

    return jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def sharded_param_elems(mcfg, mesh: MeshShape) -> tuple[int, int]:
    """(total parameters, parameters per device) under the default axis rules."""
    from grow_jax.sharding import AxisRules

    rules = AxisRules()
    total = per_dev = 0
    for shape, axes in param_shapes(mcfg):
        n = math.prod(shape)
        total += n
        div = 1
        if axes is not None and len(axes) == len(shape):
            spec = rules.spec(axes, shape, mesh)
            for a in spec:
                for name in (() if a is None else (a,) if isinstance(a, str) else a):
                    div *= mesh.shape[name]
        per_dev += n // div
    return total, per_dev


def _split(n: int, parts: int) -> int:
    """Per-device share of a dimension the rules shard over `parts` when it divides."""
    return n // parts if n % parts == 0 else n


def activation_bytes(mcfg, dims: BatchDims, mesh: MeshShape, remat: bool) -> dict:
    """Bytes kept for the backward pass of one micro-batch on one device."""
    t, v = mcfg.text, mcfg.vision
    c = _DTYPE_BYTES[mcfg.dtype]
    nb = mesh.data * mesh.fsdp
    b = _split(dims.batch, nb)
    T, K, d, tp = dims.seq, dims.targets, t.hidden_size, mesh.tensor
    n, k, hd = _split(t.num_attention_heads, tp), _split(t.num_key_value_heads, tp), t.head_dim
    f = _split(t.intermediate_size, tp)
    # Saved per decoder layer: residual in/out, two RMSNorms (f32 input + output), q/k/v and
    # the rotated q/k, attention output, MLP gate/up/activation/product; probabilities
    # (logits + softmax, f32) per head.
    per_token = (4 * d + 2 * d * 4 / c + (2 * n + 3 * k) * hd + n * hd + 4 * f) * c
    layer = b * T * per_token + b * n * T * T * 2 * 4
    # The last layer runs queries, attention output and MLP at the K action rows only.
    last = b * T * (2 * d + 2 * d * 4 / c + 3 * k * hd) * c + b * K * per_token
    last += b * n * K * T * 2 * 4
    L = t.num_hidden_layers
    decoder = (L - 1) * layer + last if not remat else L * b * T * d * c + layer
    # Output layer at the K action positions: f32 logits (saved) and their cotangent.
    head = b * K * _split(t.vocab_size, tp) * 4 * 2 + b * T * d * (c + 4)
    imgs = _split(dims.images, nb) if dims.images % nb == 0 else dims.images
    P, e = dims.patches, v.embed_dim
    vh = v.num_heads
    v_token = (6 * e + 2 * e * 4 / c + 2 * v.mlp_dim) * c
    vision = v.depth * imgs * (P * v_token + vh * P * P * 2 * 4) if imgs else 0
    return {"decoder": int(decoder), "lm_head": int(head), "vision": int(vision)}


def batch_bytes(mcfg, dims: BatchDims, mesh: MeshShape, accumulation: int) -> int:
    """The input arrays of one update (A micro-batches), per device."""
    nb = mesh.data * mesh.fsdp
    b = _split(dims.batch, nb)
    per_sample = dims.seq * (4 + 4 + 3 * 4) + dims.targets * 5 * 4
    imgs = _split(dims.images, nb)
    per_image = dims.patches * (mcfg.vision.patch_dim * 4 + 2 * 4 + 4)
    return accumulation * (b * per_sample + imgs * per_image)


def kv_cache_bytes(mcfg, batch: int, max_len: int, mesh: MeshShape) -> int:
    """The sampler's fixed-size KV cache: [B, max_len, kv_heads, head_dim] x (k, v) x layers."""
    t = mcfg.text
    b = _split(batch, mesh.data * mesh.fsdp)
    k = _split(t.num_key_value_heads, mesh.tensor)
    return 2 * t.num_hidden_layers * b * max_len * k * t.head_dim * _DTYPE_BYTES[mcfg.dtype]


def plan(mcfg, mesh: MeshShape, dims: BatchDims, *, accumulation: int = 1,
         sampler_batch: int = 0, sampler_len: int = 0) -> dict:
    """Per-device bytes of each part of the train step (and of the sampler's KV cache)."""
    total, per_dev = sharded_param_elems(mcfg, mesh)
    p = _DTYPE_BYTES[mcfg.param_dtype]
    grads = per_dev * p * (2 if accumulation > 1 else 1)  # + the accumulator
    act = activation_bytes(mcfg, dims, mesh, remat=False)
    act_remat = activation_bytes(mcfg, dims, mesh, remat=True)
    out = dict(
        param_count=total,
        params=per_dev * p,
        optimizer=2 * per_dev * p,
        gradients=grads,
        batch=batch_bytes(mcfg, dims, mesh, accumulation),
        activations=sum(act.values()),
        activations_remat=sum(act_remat.values()),
        activation_parts=act,
        # fsdp all-gathers every weight for the forward pass: the other shards' copies.
        fsdp_gather=(mesh.fsdp - 1) * per_dev * p,
        # The non-finite-update guard (step._skip_if_not_finite) selects new vs old state
        # on the updates' global norm, so the whole new params + AdamW moments are built
        # beside the donated old ones (this also covers AdamW's own temporaries).
        update_copy=3 * per_dev * p,
        kv_cache=kv_cache_bytes(mcfg, sampler_batch, sampler_len, mesh) if sampler_batch else 0,
    )
    # Peak = resident state + gradients + the larger of the two phases' temporaries: the
    # forward/backward pass (gathered weights + activations) and the guarded update's copy.
    state = out["params"] + out["optimizer"] + out["batch"] + out["gradients"]
    fwd = out["fsdp_gather"]
    out["train_total"] = state + max(fwd + out["activations"], out["update_copy"])
    out["train_total_remat"] = state + max(fwd + out["activations_remat"], out["update_copy"])
    # Rollouts run between updates with the same params resident (optimizer state too).
    out["sampler_total"] = out["params"] + out["optimizer"] + out["kv_cache"]
    return out


def fits(p: dict, gib: float, remat: bool) -> bool:
    need = max(p["train_total_remat" if remat else "train_total"], p["sampler_total"])
    return need <= gib * GIB


def suggest_mesh(mcfg, dims: BatchDims, devices: int, gib: float, remat: bool, **kw):
    """The mesh with the most data parallelism (then the least tensor parallelism) that fits
    `devices` chips of `gib` GiB, or None."""
    best = None
    for tensor in (1, 2, 4, 8):
        for fsdp in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            if devices % (tensor * fsdp):
                continue
            mesh = MeshShape(devices // (tensor * fsdp), fsdp, tensor)
            if dims.batch % (mesh.data * mesh.fsdp):
                continue
            if fits(plan(mcfg, mesh, dims, **kw), gib, remat):
                key = (mesh.data, -mesh.tensor)
                if best is None or key > best[0]:
                    best = (key, mesh)
    return None if best is None else best[1]


# ---------------------------------------------------------------- from a run config
def config_dims(config, mcfg) -> tuple[BatchDims, int, int]:
    """(micro-batch dims, sampler batch, sampler cache length) that a run config implies:
    one frame of env.image_size per prompt, agent.max_prompt_tokens bucketed."""
    v = mcfg.vision
    side = round_up(config.env.image_size, v.patch_size * v.spatial_merge_size)
    patches = (side // v.patch_size) ** 2
    imgs_per_sample = 1 + max(config.agent.history, 0)
    r = config.rl
    if r.minibatch_size % r.accumulation:
        raise ValueError(f"rl.minibatch_size ({r.minibatch_size}) must split into "
                         f"rl.accumulation ({r.accumulation}) micro-batches")
    micro = r.minibatch_size // r.accumulation
    seq = round_up(config.agent.max_prompt_tokens + config.agent.max_new_tokens, 16)
    dims = BatchDims(micro, seq, config.agent.max_new_tokens,
                     round_up(micro * imgs_per_sample, 8), patches)
    return dims, r.groups_per_iter * r.group_size, seq


def config_mesh(config, devices: int) -> MeshShape:
    m = config.mesh
    fixed = m.fsdp * m.tensor
    data = m.data if m.data != -1 else devices // fixed
    if data * fixed != devices:
        raise ValueError(f"mesh data={data} x fsdp={m.fsdp} x tensor={m.tensor} does not use "
                         f"{devices} devices")
    return MeshShape(data, m.fsdp, m.tensor)


def config_model(config):
    """The run's Qwen2VLConfig without loading weights (hf_dir's config.json, or the preset;
    the tiny preset's vocabulary is the shipped tokenizer's)."""
    from grow_jax.train import builders

    tok = None
    if not config.model.hf_dir and config.model.preset == "tiny":
        tok = builders.load_tokenizer(config)
    return builders.model_config(config, tok)


def report(config, devices: int, accelerator: str | None = None) -> str:
    mcfg = config_model(config)
    dims, sb, slen = config_dims(config, mcfg)
    mesh = config_mesh(config, devices)
    acc = config.rl.accumulation
    p = plan(mcfg, mesh, dims, accumulation=acc, sampler_batch=sb, sampler_len=slen)
    g = lambda x: f"{x / GIB:9.2f} GiB"  # noqa: E731
    lines = [
        f"model: {p['param_count'] / 1e9:.3f}B parameters, compute {mcfg.dtype}, "
        f"params {mcfg.param_dtype}",
        f"mesh: data={mesh.data} x fsdp={mesh.fsdp} x tensor={mesh.tensor} "
        f"({mesh.devices} devices)",
        f"micro-batch: {dims.batch} samples x {dims.seq} tokens ({dims.targets} action "
        f"tokens), {dims.images} images x {dims.patches} patches; accumulation {acc}",
        f"sampler: {sb} prompts x {slen} cache slots",
        "per device:",
        f"  parameters          {g(p['params'])}   ({p['param_count'] / 1e9:.3f}B x "
        f"{_DTYPE_BYTES[mcfg.param_dtype]} B, sharded by the axis rules over fsdp x tensor)",
        f"  optimizer (AdamW)   {g(p['optimizer'])}   (2 moments x parameters)",
        f"  gradients           {g(p['gradients'])}   (x2 with accumulation: + accumulator)",
        f"  fsdp-gathered params{g(p['fsdp_gather'])}   ((fsdp - 1) x parameters: every "
        "layer's weights gathered at once, an upper bound)",
        f"  update batch        {g(p['batch'])}",
        f"  activations         {g(p['activations'])}   (decoder "
        f"{p['activation_parts']['decoder'] / GIB:.2f}, vision "
        f"{p['activation_parts']['vision'] / GIB:.2f}, lm head "
        f"{p['activation_parts']['lm_head'] / GIB:.2f})",
        f"  activations (remat) {g(p['activations_remat'])}",
        f"  guarded update copy {g(p['update_copy'])}   (new params + moments beside the old "
        "until the non-finite guard's select; the peak takes the larger of it and "
        "gathered params + activations)",
        f"  sampler KV cache    {g(p['kv_cache'])}",
        f"  train step total    {g(p['train_total'])}   with remat {g(p['train_total_remat'])}",
        f"  sampling total      {g(p['sampler_total'])}",
    ]
    names = [accelerator] if accelerator else list(ACCELERATORS_GIB)
    kw = dict(accumulation=acc, sampler_batch=sb, sampler_len=slen)
    for name in names:
        gib = ACCELERATORS_GIB[name]
        remat = bool(config.model.remat)
        ok = fits(p, gib, remat)
        line = f"{name} ({gib} GiB): {'fits' if ok else 'does not fit'}"
        line += " (model.remat=True)" if remat else ""
        if not ok:
            for r in ((False, True) if not remat else (True,)):
                alt = suggest_mesh(mcfg, dims, devices, gib, r, **kw)
                if r and not remat and fits(p, gib, True):
                    line += "; fits with model.remat=True"
                    break
                if alt is not None:
                    line += (f"; suggested mesh on {devices} chips: data={alt.data} "
                             f"fsdp={alt.fsdp} tensor={alt.tensor}"
                             + (" with model.remat=True" if r else ""))
                    break
            else:
                line += f"; no mesh of {devices} chips fits: use more chips"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------- XLA's figures
def synthetic_batch(mcfg, dims: BatchDims, updates: int = 1, accumulation: int = 1) -> dict:
    """Zero arrays with the train step's batch layout ([M, A, ...])."""
    v = mcfg.vision
    B, T, K, N, P = dims.batch, dims.seq, dims.targets, dims.images, dims.patches
    lead = (updates, accumulation)
    z = lambda *s, dt=np.int32: np.zeros(lead + s, dt)  # noqa: E731
    return dict(input_ids=z(B, T), attention_mask=z(B, T), position_ids=z(3, B, T),
                pixel_values=z(N, P, v.patch_dim, dt=np.float32), vision_pos_ids=z(N, P, 2),
                vision_segment_ids=z(N, P), target_pos=z(B, K), targets=z(B, K),
                loss_mask=z(B, K, dt=np.float32), old_logprobs=z(B, K, dt=np.float32),
                advantages=z(B, K, dt=np.float32))


def xla_memory(mcfg, mesh, dims: BatchDims, accumulation: int = 1) -> dict:
    """XLA's memory analysis of the compiled train step (one update), per device, on `mesh`
    (a jax Mesh); parameters abstract, nothing allocated."""
    import jax
    from flax import nnx

    from grow_jax import sharding
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.train import step
    from grow_jax.train.optim import make_optimizer

    class Opt:  # AdamW + clipping, the RL phase's optimizer
        lr, warmup_steps, total_steps, schedule, grad_clip = 1e-4, 0, 10, "constant", 1.0
        weight_decay, final_lr_ratio, b1, b2, eps, freeze_vision = 0.0, 0.1, 0.9, 0.999, 1e-8, False

    model = nnx.eval_shape(lambda: Qwen2VL(mcfg, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    p_sh = sharding.state_shardings(params, mesh)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          params, p_sh)
    tx = make_optimizer(Opt, params)
    opt_sh = step.opt_state_shardings(tx, params, mesh)
    opt = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       jax.eval_shape(tx.init, params), opt_sh)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = step.TrainState(params, opt, jax.ShapeDtypeStruct((), np.int32, sharding=rep),
                            jax.ShapeDtypeStruct((2,), np.uint32, sharding=rep))
    batch = synthetic_batch(mcfg, dims, 1, accumulation)
    b_sh = step.batch_shardings(mesh, batch)
    batch = {k: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=b_sh[k]) for k, x in batch.items()}
    st_sh = jax.tree.map(lambda x: x.sharding, state)
    fn = jax.jit(functools.partial(step.train_step, graphdef=graphdef, rest=rest, tx=tx,
                                   cfg=step.LossConfig()),
                 in_shardings=(st_sh, b_sh), out_shardings=(st_sh, None), donate_argnums=0)
    with jax.set_mesh(mesh):
        m = fn.lower(state, batch).compile().memory_analysis()
    return dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
                alias=m.alias_size_in_bytes, temp=m.temp_size_in_bytes,
                peak=m.argument_size_in_bytes + m.output_size_in_bytes
                - m.alias_size_in_bytes + m.temp_size_in_bytes)


def main(argv=None) -> int:
    """`--config=FILE [--config.KEY=V ...] [--devices=N] [--accelerator=NAME]`."""
    from absl import flags
    from ml_collections import config_flags

    from grow_jax import config_utils

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Run config file.", flag_values=fv)
    flags.DEFINE_integer("devices", None, "Chips in the slice (default: mesh.fsdp x "
                         "mesh.tensor x max(mesh.data, 1)).", flag_values=fv)
    flags.DEFINE_enum("accelerator", None, sorted(ACCELERATORS_GIB),
                      "Check this accelerator only (default: all).", flag_values=fv)
    fv(list(sys.argv if argv is None else argv))
    if fv.config is None:
        raise SystemExit("--config=configs/NAME.py is required")
    config = config_utils.resolve_config(fv.config)
    m = config.mesh
    devices = fv.devices or m.fsdp * m.tensor * max(m.data, 1)
    print(report(config, devices, fv.accelerator))
    return 0


if __name__ == "__main__":
    sys.exit(main())
