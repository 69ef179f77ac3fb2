"""Train-step throughput: grow_jax's jitted step vs PyTorch transformers, side by side.

Two model sizes, each on both sides with the same random weights (torch weights copied
into the NNX model), the same batch and the same loss (clipped-ratio policy loss, token
mean over action tokens), global-norm clipping at 1.0 and AdamW. One step = forward +
backward + optimizer update.

- `100m`: a ~95M-parameter Qwen2-VL on 32 GROW-like samples (one 56x56 frame = 16
  patches / 4 image tokens, ~20 text tokens, 1-4 action tokens, left-padded).
- `tiny`: the RL main job's model (configs/tiny_cpu.py with the shipped tokenizer) on one
  full 512-sample update of its compact BabyAI prompts (28x28 frame padded to 32x32 =
  16 patches / 4 image tokens, 16 tokens, action word + <|im_end|>).

Sides:
- grow_jax: `Learner.step`, one update per call, logits only at the action positions.
- grow_jax_packed: the same step on the same samples packed several per row
  (`rl.pack`, grow_jax/data/packing.py: per-sample block-diagonal attention, automatic
  row length), same loss arrays.
- torch full: `Qwen2VLForConditionalGeneration(...)` logits at every position, gathered.
- torch gather: base model, then lm_head only on the hidden states at the action
  positions.
- bf16 pair, mixed precision as each library's users run it (float32 master weights and
  AdamW state, bfloat16 compute): grow_jax_bf16 (the model's compute dtype `bfloat16`,
  what `model.dtype = "bfloat16"` in a config gives) against torch_action_logits_bf16
  (the gather side under `torch.autocast("cpu", torch.bfloat16)`, which on an AMX CPU
  runs its matmuls on AMX).
Both get precomputed M-RoPE position ids. Runs are interleaved; medians are reported.
FLOP/s: XLA's cost analysis of the compiled step and an analytic matmul count, against
2048x2048 f32 and bf16 matmuls of both libraries measured in the same process.

    python benchmarks/train_step.py              # both sizes; writes results + docs section
    python benchmarks/train_step.py --sizes=tiny --repeats=3 --no_write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import goals  # benchmarks/goals.py: the issue-13 table over all CPU kinds
from _common import (  # benchmarks/_common.py
    DOC,
    MODEL_100M,
    cpu_info,
    machines_section,
    save_results,
    stored_results,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
NAME, SECTION = "train_step", "## Train step"
INTRO = [(
    "One optimizer step (forward + backward + global-norm clip + AdamW) on the same "
    "samples, same weights and the same clipped-ratio loss on every side, in float32 "
    "except the bf16 pair (float32 master weights, bfloat16 compute on both sides); "
    "medians of interleaved steps after warm-up steps. `100m`: a random ~95M-parameter "
    "Qwen2-VL on 32 GROW samples; `tiny`: the RL main job's model (configs/tiny_cpu.py) on "
    "one full 512-sample update of its BabyAI decision samples. `grow_jax_packed` packs the "
    "same samples several per row (`rl.pack = True`; per-sample block-diagonal attention, "
    "M-RoPE positions restarting per sample, automatic row length), with the padded path's "
    "per-sample loss arrays."
)]


def tiny_cpu_config():
    """(Qwen2VLConfig, tokenizer) of the RL main job (configs/tiny_cpu.py)."""
    import importlib.util

    from grow_jax.train import builders

    spec = importlib.util.spec_from_file_location("tiny_cpu", ROOT / "configs" / "tiny_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    tok = builders.load_tokenizer(cfg)
    return builders.model_config(cfg, tok), tok


def build(config, seed: int = 0):
    """(torch model, grow_jax model, grow_jax bf16-compute model) with identical weights."""
    import torch
    import transformers
    from flax import nnx

    from grow_jax.models.qwen2_vl import params as qparams
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    torch.manual_seed(seed)
    hf = config.to_hf()
    for part in (hf, hf["text_config"]):  # hub default special ids exceed this vocab
        part.update(bos_token_id=None, eos_token_id=None)
    hf_cfg = transformers.Qwen2VLConfig.from_dict(hf)
    hf_cfg._attn_implementation = "sdpa"
    tmodel = transformers.Qwen2VLForConditionalGeneration(hf_cfg).float().train()
    tensors = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    models = []
    for cfg in (config, config.replace(dtype="bfloat16")):
        model = Qwen2VL(cfg, rngs=nnx.Rngs(0))
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, qparams.state_from_hf(tensors, config))
        nnx.update(model, state)
        models.append(model)
    return tmodel, *models


def make_samples(config, batch: int, image_hw: int, seed: int = 0):
    """GROW decision samples: text, one frame, text, then 1-4 action tokens."""
    from grow_jax.data.samples import make_sample

    rng = np.random.default_rng(seed)
    v = config.vision
    n_img = (image_hw // v.patch_size) ** 2 // v.spatial_merge_size**2
    hi = config.image_token_id - 1
    out = []
    for _ in range(batch):
        head = rng.integers(1, hi, int(rng.integers(12, 18))).tolist()
        tail = rng.integers(1, hi, int(rng.integers(2, 6))).tolist()
        prompt = (
            head
            + [config.vision_start_token_id]
            + [config.image_token_id] * n_img
            + [config.vision_end_token_id]
            + tail
        )
        k = int(rng.integers(1, 5))
        ids = prompt + rng.integers(1, hi, k).tolist()
        frame = rng.integers(0, 256, (image_hw, image_hw, 3), dtype=np.uint8)
        out.append(
            make_sample(
                ids,
                [frame],
                len(prompt) - 1 + np.arange(k),
                -rng.random(k),
                rng.normal(size=k),
                config,
            )
        )
    return out


def make_tiny_samples(config, tokenizer, batch: int, seed: int = 0):
    """The main job's decision samples: compact prompt with one 28x28 frame, then the
    action word and <|im_end|> (both are loss targets)."""
    from grow_jax.agent.prompts import PromptConfig, build_prompt_ids
    from grow_jax.agent.tokenizer import special_token_ids
    from grow_jax.data.samples import make_sample

    rng = np.random.default_rng(seed)
    v = config.vision
    n_img = (32 // v.patch_size) ** 2 // v.spatial_merge_size**2
    end = special_token_ids(tokenizer).im_end
    actions = [tokenizer.encode(a)[0] for a in ("left", "right", "forward")]
    out = []
    for _ in range(batch):
        color = rng.choice(["red", "green", "blue", "purple", "yellow", "grey"])
        obj = rng.choice(["ball", "box", "key"])
        prompt = build_prompt_ids(
            tokenizer, f"go to the {color} {obj}", n_img, config=PromptConfig(compact=True)
        )
        ids = prompt + [int(rng.choice(actions)), end]
        frame = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        k = 2
        out.append(
            make_sample(
                ids,
                [frame],
                len(prompt) - 1 + np.arange(k),
                -rng.random(k),
                rng.normal(size=k),
                config,
            )
        )
    return out


class Opt:
    lr, warmup_steps, total_steps, schedule, final_lr_ratio = 1e-5, 0, 10**9, "constant", 0.1
    grad_clip, weight_decay, b1, b2, eps, freeze_vision = 1.0, 0.0, 0.9, 0.999, 1e-8, False


class JaxSide:
    def __init__(self, model, batch: dict, copy_params: bool = False):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from grow_jax import sharding
        from grow_jax.data.pipeline import stack_micro_batches
        from grow_jax.train.optim import make_optimizer
        from grow_jax.train.step import Learner, LossConfig, batch_shardings

        self.jax = jax
        mesh = sharding.make_mesh(devices=jax.devices()[:1])
        sharding.shard_model(model, mesh)
        self.learner = Learner(
            model, make_optimizer(Opt, nnx.state(model, nnx.Param)), LossConfig(), mesh
        )
        stacked = stack_micro_batches([batch], 1)
        self.batch = jax.device_put(stacked, batch_shardings(mesh, stacked))
        # copy_params: a second side on the same model must not donate its arrays
        params = self.learner._params_template
        self.state = self.learner.init_state(jax.tree.map(jnp.copy, params) if copy_params
                                             else None)

    def step(self) -> float:
        self.state, m = self.learner.step(self.state, self.batch)
        return float(m["loss"])

    def cost_flops(self) -> float:
        ((fn, _),) = self.learner._compiled.values()
        cost = fn.lower(self.state, self.batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))


class TorchSide:
    def __init__(self, tmodel, batch: dict, samples, gather: bool, bf16: bool = False):
        """`bf16`: the forward under CPU autocast to bfloat16 (weights stay float32)."""
        import contextlib

        import torch

        self.torch, self.model, self.gather = torch, tmodel, gather
        self.autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16
                         else contextlib.nullcontext)
        t = lambda x, dt=torch.long: torch.from_numpy(np.ascontiguousarray(x)).to(dt)
        self.inputs = {
            "input_ids": t(batch["input_ids"]),
            "attention_mask": t(batch["attention_mask"]),
            "position_ids": t(batch["position_ids"]),
            "pixel_values": t(np.concatenate([s.pixel_values for s in samples]), torch.float32),
            "image_grid_thw": t(np.concatenate([s.image_grid_thw for s in samples])),
        }
        self.tpos, self.targets = t(batch["target_pos"]), t(batch["targets"])
        self.old = t(batch["old_logprobs"], torch.float32)
        self.adv = t(batch["advantages"], torch.float32)
        self.mask = t(batch["loss_mask"], torch.float32)
        self.opt = torch.optim.AdamW(
            tmodel.parameters(),
            lr=Opt.lr,
            betas=(Opt.b1, Opt.b2),
            eps=Opt.eps,
            weight_decay=Opt.weight_decay,
        )

    def loss(self):
        torch = self.torch
        idx = self.tpos[..., None]
        if self.gather:
            h = self.model.model(**self.inputs).last_hidden_state
            h = torch.take_along_dim(h, idx, dim=1)
            logits = self.model.lm_head(h)
        else:
            logits = self.model(**self.inputs).logits
            logits = torch.take_along_dim(logits, idx, dim=1)
        logp = torch.log_softmax(logits.float(), -1)
        logp = torch.take_along_dim(logp, self.targets[..., None], -1)[..., 0]
        ratio = torch.exp(torch.where(self.mask > 0, logp - self.old, 0.0))
        pg = -torch.minimum(ratio * self.adv, ratio.clamp(0.8, 1.2) * self.adv)
        return (pg * self.mask).sum() / self.mask.sum().clamp(min=1)

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss()
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), Opt.grad_clip)
        self.opt.step()
        return float(loss)


def analytic_flops(config, rows: int, seq: int, slots: int, pixel_values,
                   rows_only_last: bool = True) -> float:
    """Matmul FLOPs of one train step (forward x3): decoder on every token of `rows` rows of
    `seq` tokens (attention over the whole row, as XLA scores every pair), the output layer
    at the `slots` logits positions per row, the vision tower on every image slot.
    `rows_only_last`: the last decoder layer computes queries, attention output and MLP only
    at the logits positions (grow_jax); otherwise at every token (torch)."""
    t, v = config.text, config.vision
    B, T, K = rows, seq, slots
    d, hd = t.hidden_size, t.head_dim
    nq, nk, f = t.num_attention_heads, t.num_key_value_heads, t.intermediate_size
    kv = 2 * 2 * d * nk * hd  # per token
    query = 2 * (d * nq * hd + nq * hd * d + 3 * d * f) + 4 * T * nq * hd  # per query row
    n_full = t.num_hidden_layers - (1 if rows_only_last else 0)
    text = B * T * n_full * (kv + query) + B * K * 2 * d * t.vocab_size
    if rows_only_last:
        text += B * (T * kv + K * query)
    pv = pixel_values
    n_img, P = (pv.shape[0], pv.shape[1]) if pv.ndim == 3 else (1, pv.shape[0])
    e, m = v.embed_dim, v.mlp_dim
    block = 2 * (4 * e * e + 2 * e * m) + 4 * P * e
    merged = P // v.spatial_merge_size**2
    vision = n_img * (
        P * (2 * v.patch_dim * e + v.depth * block)
        + merged * 2 * (v.merge_dim**2 + v.merge_dim * v.hidden_size)
    )
    return 3.0 * (text + vision)


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rates(repeats: int = 10, n: int = 2048) -> dict:
    """GFLOP/s of an n x n matmul: XLA (jit jnp.dot) and torch, f32 and bf16."""
    import jax
    import jax.numpy as jnp
    import torch

    out = {}
    for name in ("float32", "bfloat16"):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(name)
        f = jax.jit(jnp.dot)
        out[f"xla_{name}"] = _median_s(lambda: f(a, a).block_until_ready(), repeats)
        ta = torch.randn(n, n).to(getattr(torch, name))
        out[f"torch_{name}"] = _median_s(lambda: torch.mm(ta, ta), repeats)
    return {k: round(2 * n**3 / v / 1e9, 1) for k, v in out.items()}



def setup(size: str, batch_size: int):
    """(config, torch model, grow_jax model, its bf16-compute twin, samples) for one size."""
    if size == "tiny":
        config, tok = tiny_cpu_config()
        return config, *build(config), make_tiny_samples(config, tok, batch_size)
    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

    config = Qwen2VLConfig.tiny(**MODEL_100M)
    return config, *build(config), make_samples(config, batch_size, 56)


def run(size: str, args) -> dict:
    import copy

    import jax
    import torch

    from grow_jax.data import packing
    from grow_jax.data.samples import BatchShape, collate

    torch.set_num_threads(args.threads)
    load_start = round(os.getloadavg()[0], 2)
    batch_size = args.tiny_batch if size == "tiny" else args.batch
    config, tmodel, model, model_bf16, samples = setup(size, batch_size)
    n_params = sum(p.numel() for p in tmodel.parameters())
    shape = BatchShape.fit(samples, batch_size)
    batch = collate(samples, shape, config)
    pshape = packing.fit([samples], shape, config.text)
    packed = packing.collate_packed(samples, pshape, config)
    sides = {
        "grow_jax": JaxSide(model, batch),
        "grow_jax_packed": JaxSide(model, packed, copy_params=True),
        "torch_full_logits": TorchSide(tmodel, batch, samples, gather=False),
        # its own copy of the module, so both torch sides train the same weights
        "torch_action_logits": TorchSide(copy.deepcopy(tmodel), batch, samples, gather=True),
        "grow_jax_bf16": JaxSide(model_bf16, batch),
        "torch_action_logits_bf16": TorchSide(copy.deepcopy(tmodel), batch, samples,
                                              gather=True, bf16=True),
    }
    compile_s, first_loss = {}, {}
    for name, side in sides.items():
        t0 = time.perf_counter()
        first_loss[name] = side.step()
        compile_s[name] = round(time.perf_counter() - t0, 1)
    for _ in range(args.warmup):
        for side in sides.values():
            side.step()
    times = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            t0 = time.perf_counter()
            side.step()  # float(loss) waits for the result on both sides
            times[name].append(time.perf_counter() - t0)
    rates = matmul_rates()
    peak = rates["xla_float32"] * 1e9
    xla_flops = {k: sides[k].cost_flops() for k in ("grow_jax", "grow_jax_packed")}
    flops = {
        "grow_jax": analytic_flops(config, shape.batch, shape.seq, shape.targets,
                                   batch["pixel_values"]),
        "grow_jax_packed": analytic_flops(config, pshape.rows, pshape.row_len,
                                          pshape.row_targets, packed["pixel_values"]),
        "torch": analytic_flops(config, shape.batch, shape.seq, shape.targets,
                                batch["pixel_values"], rows_only_last=False),
    }
    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: batch_size / v for k, v in med.items()}
    t, v = config.text, config.vision
    torch_sides = ("torch_full_logits", "torch_action_logits")
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_info(),
            "cpus": os.cpu_count(),
            "load_avg_1m_start": load_start,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "torch_threads": args.threads,
        },
        "command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
        "model": {
            "params_M": round(n_params / 1e6, 2),
            "hidden_size": t.hidden_size,
            "num_hidden_layers": t.num_hidden_layers,
            "intermediate_size": t.intermediate_size,
            "vocab_size": t.vocab_size,
            "vision_depth": v.depth,
            "embed_dim": v.embed_dim,
        },
        "batch": {
            "samples": batch_size,
            "seq": shape.seq,
            "action_slots": shape.targets,
            "action_tokens": int(batch["loss_mask"].sum()),
            "real_tokens": int(sum(s.length for s in samples)),
            "padded_tokens": int(batch["input_ids"].size),
            "packed_rows": pshape.rows,
            "packed_row_len": pshape.row_len,
            "packed_tokens": int(packed["input_ids"].size),
            "image_hw": 32 if size == "tiny" else 56,
            "image_layout": "batched" if shape.images.grid else "flat",
        },
        "repeats": args.repeats,
        "warmup": args.warmup,
        "step_s": {k: round(v, 4) for k, v in med.items()},
        "step_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "samples_per_s": {k: round(v, 1) for k, v in sps.items()},
        "speedup_vs": {j: {k: round(sps[j] / sps[k], 2) for k in torch_sides}
                       for j in ("grow_jax", "grow_jax_packed")},
        "bf16_vs": {"grow_jax_bf16/torch_action_logits_bf16":
                    round(sps["grow_jax_bf16"] / sps["torch_action_logits_bf16"], 2),
                    "grow_jax_bf16/grow_jax": round(sps["grow_jax_bf16"] / sps["grow_jax"], 2),
                    "torch_action_logits_bf16/torch_action_logits": round(
                        sps["torch_action_logits_bf16"] / sps["torch_action_logits"], 2),
                    "torch_action_logits_bf16/grow_jax": round(
                        sps["torch_action_logits_bf16"] / sps["grow_jax"], 2)},
        "packed_vs_padded": round(sps["grow_jax_packed"] / sps["grow_jax"], 2),
        "first_loss": {k: round(v, 6) for k, v in first_loss.items()},
        "packed_loss_abs_diff": abs(first_loss["grow_jax_packed"] - first_loss["grow_jax"]),
        "compile_plus_first_step_s": compile_s,
        "flops_per_step": {
            "xla_cost_analysis": xla_flops,
            "analytic_matmul": flops,
        },
        "achieved_gflops": {k: round(flops[k] / med[k] / 1e9, 1)
                            for k in ("grow_jax", "grow_jax_packed")},
        "matmul_2048_gflops": rates,
        "fraction_of_matmul_peak": {k: round(flops[k] / med[k] / peak, 3)
                                    for k in ("grow_jax", "grow_jax_packed")},
    }


WHAT = {
    "grow_jax": "padded rows, logits only at the action positions (jit, one update per call)",
    "grow_jax_packed": "same step, samples packed several per row (`rl.pack`)",
    "torch_full_logits": "transformers forward, logits at all positions",
    "torch_action_logits": "base model + lm_head on the gathered action positions",
    "grow_jax_bf16": "grow_jax, bf16 compute (f32 master weights)",
    "torch_action_logits_bf16": "torch action, under bf16 autocast (f32 master weights)",
}


def section(stored: dict[str, dict]) -> str:
    """The "Train step" section of docs/performance.md: one subsection per stored CPU kind."""
    return machines_section(SECTION, NAME, INTRO, stored, render)


def render(results: dict) -> list[str]:
    """One machine's settings, a table per model size and the notes under it."""
    first = next(iter(results.values()))
    mach, cpu, mm = first["machine"], first["machine"]["cpu"], first["matmul_2048_gflops"]
    flags = ", ".join(cpu["flags"]) or "none of AVX2/AVX-512/AMX"
    amx = "amx_tile" in cpu["flags"]
    lines = [
        f"Measured on: {cpu['model']} ({mach['cpus']} CPUs; flags: {flags}; "
        f"{'with' if amx else 'no'} AMX), jax {mach['jax']}, torch {mach['torch']} "
        f"({mach['torch_threads']} threads). 2048x2048 matmul GFLOP/s: XLA f32 "
        f"{mm['xla_float32']}, bf16 {mm['xla_bfloat16']}; torch f32 {mm['torch_float32']}, "
        f"bf16 {mm['torch_bfloat16']}. Command: `{first['command']}`.",
    ]
    if not amx and mm["torch_bfloat16"] < 2 * mm["torch_float32"]:
        lines += ["", (
            "This CPU has no AMX, so a PyTorch bf16 user gains little here (torch bf16 "
            f"{mm['torch_bfloat16']} vs f32 {mm['torch_float32']} GFLOP/s); on an Intel Xeon "
            "with AMX torch's bf16 matmul runs several times its f32 rate while XLA's "
            "does not, so a torch bf16 step there can beat every f32 figure below.")]
    for size, r in results.items():
        b, m, mach = r["batch"], r["model"], r["machine"]
        lines += [
            "",
            f"#### {size}",
            "",
            (
                f"{m['params_M']}M parameters (hidden {m['hidden_size']}, "
                f"{m['num_hidden_layers']} layers, vocab {m['vocab_size']}, vision depth "
                f"{m['vision_depth']} / embed {m['embed_dim']}); {b['samples']} samples "
                f"({b['image_hw']}x{b['image_hw']} frame, {b['real_tokens']} real tokens, "
                f"padded to {b['seq']} each = {b['padded_tokens']}, packed into "
                f"{b['packed_rows']} rows of {b['packed_row_len']} = {b['packed_tokens']}; "
                f"{b['action_tokens']} action tokens); medians of {r['repeats']} steps after "
                f"{r['warmup']} warm-up steps; 1-min load average {mach['load_avg_1m_start']} "
                f"at the start, {mach['load_avg_1m']} at the end on {mach['cpus']} CPUs "
                "(above ~1 means other processes shared the cores)."
            ),
            "",
            "| side | what it computes | step s | samples/s | vs torch full | vs torch action |",
            "|---|---|---|---|---|---|",
        ]
        for k in WHAT:
            sp = r["speedup_vs"].get(k)
            full, act = ((f"{sp['torch_full_logits']}x", f"{sp['torch_action_logits']}x")
                         if sp else ("-", "-"))
            lines.append(f"| {k} | {WHAT[k]} | {r['step_s'][k]} | {r['samples_per_s'][k]} "
                         f"| {full} | {act} |")
        f, fl = r["flops_per_step"], r["flops_per_step"]["analytic_matmul"]
        frac = r["fraction_of_matmul_peak"]
        lines += [
            "",
            "First-step loss (same weights, same batch): "
            + ", ".join(f"{k} {v}" for k, v in r["first_loss"].items())
            + f"; packed vs padded |diff| {r['packed_loss_abs_diff']:.1e}. Packed / padded "
            f"step speed: {r['packed_vs_padded']}x. Compile + first step s: "
            + ", ".join(f"{k} {v}" for k, v in r["compile_plus_first_step_s"].items()) + ".",
            "",
            (
                f"FLOPs per step (analytic matmul count, forward x3): padded "
                f"{fl['grow_jax'] / 1e9:.2f} GFLOP, packed {fl['grow_jax_packed'] / 1e9:.2f}, "
                f"torch {fl['torch'] / 1e9:.2f} (it runs the last layer at every token); XLA's "
                f"cost analysis: padded {f['xla_cost_analysis']['grow_jax'] / 1e9:.2f}, packed "
                f"{f['xla_cost_analysis']['grow_jax_packed'] / 1e9:.2f}. Achieved: padded "
                f"{r['achieved_gflops']['grow_jax']} GFLOP/s = {100 * frac['grow_jax']:.0f}% "
                f"and packed {r['achieved_gflops']['grow_jax_packed']} GFLOP/s = "
                f"{100 * frac['grow_jax_packed']:.0f}% of the measured XLA f32 matmul roof "
                f"({r['matmul_2048_gflops']['xla_float32']} GFLOP/s)."
            ),
        ]
        lines += ["", bf16_note(r)]
        if size != "tiny":
            lines += ["", roofline_note(r)]
    return lines


def bf16_note(r: dict) -> str:
    """The equal-dtype bf16 ratio, and what a PyTorch bf16 user on this CPU would see."""
    v = r["bf16_vs"]
    return (
        f"bf16 at equal dtype: grow_jax_bf16 / torch_action_logits_bf16 = "
        f"{v['grow_jax_bf16/torch_action_logits_bf16']}x. bf16 over f32 on each side: "
        f"grow_jax {v['grow_jax_bf16/grow_jax']}x, torch "
        f"{v['torch_action_logits_bf16/torch_action_logits']}x. A PyTorch user who turns on "
        f"bf16 autocast here runs at {v['torch_action_logits_bf16/grow_jax']}x the speed of "
        f"grow_jax's float32 step and "
        f"{1 / v['grow_jax_bf16/torch_action_logits_bf16']:.2f}x that of its bf16 step."
    )


def roofline_note(r: dict) -> str:
    """How far any step doing torch_action_logits' FLOPs could get, from measured numbers."""
    f = r["flops_per_step"]["analytic_matmul"]
    flops, peak = f["torch"], r["matmul_2048_gflops"]["xla_float32"] * 1e9
    frac = flops / r["step_s"]["torch_action_logits"] / peak
    return (
        f"Roofline: torch_action_logits runs at {100 * frac:.0f}% of the measured XLA f32 "
        f"matmul rate, so any step doing its FLOPs could be at most {1 / frac:.2f}x faster "
        f"than it; grow_jax padded does {100 * (1 - f['grow_jax'] / flops):.0f}% fewer "
        f"(last layer at the action rows only), packed "
        f"{100 * (1 - f['grow_jax_packed'] / flops):.0f}% fewer (and fewer pad tokens). "
        f"Packing saves only what the samples waste in padding: here "
        f"{100 * (1 - r['batch']['real_tokens'] / r['batch']['padded_tokens']):.0f}% of the "
        f"padded tokens are padding."
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100m,tiny", help="comma-separated: 100m, tiny")
    p.add_argument("--batch", type=int, default=32, help="samples per step (100m)")
    p.add_argument("--tiny_batch", type=int, default=512, help="samples per step (tiny)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no_write", action="store_true", help="print only")
    p.add_argument(
        "--doc_only", action="store_true", help="regenerate the docs section from the JSON"
    )
    args = p.parse_args(argv)
    if args.doc_only:
        write_section(SECTION, section(stored_results(NAME)))
        goals.write()
        return
    r = {size: run(size, args) for size in args.sizes.split(",")}
    print(json.dumps(r, indent=1))
    if not args.no_write:
        path = save_results(NAME, r)
        write_section(SECTION, section(stored_results(NAME)))
        goals.write()
        print(f"wrote {path} and the '{SECTION}' section of {DOC}")


if __name__ == "__main__":
    main()
