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
- torch full: `Qwen2VLForConditionalGeneration(...)` logits at every position, gathered.
- torch gather: base model, then lm_head only on the hidden states at the action
  positions.
Both get precomputed M-RoPE position ids. Runs are interleaved; medians are reported.
FLOP/s: XLA's cost analysis of the compiled step and an analytic matmul count, against
a 2048x2048 f32 matmul measured in the same process.

    python benchmarks/train_step.py              # both sizes; writes results + docs section
    python benchmarks/train_step.py --sizes=tiny --repeats=3 --no_write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from _common import DOC, MODEL_100M, write_section  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_step.json"
SECTION = "## Train step"


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
    """(torch model, grow_jax model) with identical weights."""
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
    model = Qwen2VL(config, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, qparams.state_from_hf(tensors, config))
    nnx.update(model, state)
    return tmodel, model


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
    def __init__(self, model, batch: dict):
        import jax
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
        self.state = self.learner.init_state()

    def step(self) -> float:
        self.state, m = self.learner.step(self.state, self.batch)
        return float(m["loss"])

    def cost_flops(self) -> float:
        (fn,) = self.learner._compiled.values()
        cost = fn.lower(self.state, self.batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))


class TorchSide:
    def __init__(self, tmodel, batch: dict, samples, gather: bool):
        import torch

        self.torch, self.model, self.gather = torch, tmodel, gather
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
        loss = self.loss()
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), Opt.grad_clip)
        self.opt.step()
        return float(loss)


def analytic_flops(config, shape, batch: dict, rows_only_last: bool = True) -> float:
    """Matmul FLOPs of one train step (forward x3): decoder on every padded token, the output
    layer at the K action slots, the vision tower on every image slot. `rows_only_last`: the
    last decoder layer computes queries, attention output and MLP only at the K action slots
    (grow_jax); otherwise at every token (torch)."""
    t, v = config.text, config.vision
    B, T, K = shape.batch, shape.seq, shape.targets
    d, hd = t.hidden_size, t.head_dim
    nq, nk, f = t.num_attention_heads, t.num_key_value_heads, t.intermediate_size
    kv = 2 * 2 * d * nk * hd  # per token
    query = 2 * (d * nq * hd + nq * hd * d + 3 * d * f) + 4 * T * nq * hd  # per query row
    n_full = t.num_hidden_layers - (1 if rows_only_last else 0)
    text = B * T * n_full * (kv + query) + B * K * 2 * d * t.vocab_size
    if rows_only_last:
        text += B * (T * kv + K * query)
    pv = batch["pixel_values"]
    n_img, P = (pv.shape[0], pv.shape[1]) if pv.ndim == 3 else (1, pv.shape[0])
    e, m = v.embed_dim, v.mlp_dim
    block = 2 * (4 * e * e + 2 * e * m) + 4 * P * e
    merged = P // v.spatial_merge_size**2
    vision = n_img * (
        P * (2 * v.patch_dim * e + v.depth * block)
        + merged * 2 * (v.merge_dim**2 + v.merge_dim * v.hidden_size)
    )
    return 3.0 * (text + vision)


def matmul_peak(repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / statistics.median(times)


def setup(size: str, batch_size: int):
    """(config, torch model, grow_jax model, samples) for one benchmark size."""
    if size == "tiny":
        config, tok = tiny_cpu_config()
        tmodel, model = build(config)
        return config, tmodel, model, make_tiny_samples(config, tok, batch_size)
    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

    config = Qwen2VLConfig.tiny(**MODEL_100M)
    tmodel, model = build(config)
    return config, tmodel, model, make_samples(config, batch_size, 56)


def run(size: str, args) -> dict:
    import copy

    import jax
    import torch

    from grow_jax.data.samples import BatchShape, collate

    torch.set_num_threads(args.threads)
    batch_size = args.tiny_batch if size == "tiny" else args.batch
    config, tmodel, model, samples = setup(size, batch_size)
    n_params = sum(p.numel() for p in tmodel.parameters())
    shape = BatchShape.fit(samples, batch_size)
    batch = collate(samples, shape, config)
    sides = {
        "grow_jax": JaxSide(model, batch),
        "torch_full_logits": TorchSide(tmodel, batch, samples, gather=False),
        # its own copy of the module, so both torch sides train the same weights
        "torch_action_logits": TorchSide(copy.deepcopy(tmodel), batch, samples, gather=True),
    }
    t0 = time.perf_counter()
    first_loss = {"grow_jax": sides["grow_jax"].step()}
    compile_s = time.perf_counter() - t0
    for name, side in sides.items():
        if name != "grow_jax":
            first_loss[name] = side.step()
    for _ in range(args.warmup):
        for side in sides.values():
            side.step()
    times = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            t0 = time.perf_counter()
            side.step()  # float(loss) waits for the result on both sides
            times[name].append(time.perf_counter() - t0)
    peak = matmul_peak()
    xla_flops = sides["grow_jax"].cost_flops()
    flops = analytic_flops(config, shape, batch)
    torch_flops = analytic_flops(config, shape, batch, rows_only_last=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: batch_size / v for k, v in med.items()}
    t, v = config.text, config.vision
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "torch_threads": args.threads,
        },
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
            "image_hw": 32 if size == "tiny" else 56,
            "image_layout": "batched" if shape.images.grid else "flat",
        },
        "repeats": args.repeats,
        "warmup": args.warmup,
        "step_s": {k: round(v, 4) for k, v in med.items()},
        "step_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "samples_per_s": {k: round(v, 1) for k, v in sps.items()},
        "speedup_vs": {k: round(sps["grow_jax"] / v, 2) for k, v in sps.items() if k != "grow_jax"},
        "first_loss": {k: round(v, 6) for k, v in first_loss.items()},
        "jax_compile_plus_first_step_s": round(compile_s, 1),
        "flops_per_step": {
            "xla_cost_analysis": xla_flops,
            "analytic_matmul": flops,
            "analytic_matmul_torch": torch_flops,
        },
        "achieved_gflops": {
            "xla": round(xla_flops / med["grow_jax"] / 1e9, 1),
            "analytic": round(flops / med["grow_jax"] / 1e9, 1),
        },
        "matmul_f32_2048_gflops": round(peak / 1e9, 1),
        "fraction_of_matmul_peak": round(flops / med["grow_jax"] / peak, 3),
    }


WHAT = {
    "grow_jax": "logits only at the action positions (jit, one update per call)",
    "torch_full_logits": "transformers forward, logits at all positions",
    "torch_action_logits": "base model + lm_head on the gathered action positions",
}


def section(results: dict) -> str:
    lines = [
        SECTION,
        "",
        "Written by `benchmarks/train_step.py` from `benchmarks/results/train_step.json`.",
        "",
        (
            "One optimizer step (forward + backward + global-norm clip + AdamW) on the same "
            "samples, same weights and the same clipped-ratio loss on both sides; medians of "
            "interleaved steps after warm-up steps. `100m`: a random ~95M-parameter Qwen2-VL on 32 "
            "GROW samples; `tiny`: the RL main job's model (configs/tiny_cpu.py) on one full "
            "512-sample update of its BabyAI decision samples."
        ),
    ]
    for size, r in results.items():
        b, m, mach = r["batch"], r["model"], r["machine"]
        lines += [
            "",
            f"### {size}",
            "",
            (
                f"{m['params_M']}M parameters (hidden {m['hidden_size']}, "
                f"{m['num_hidden_layers']} layers, vocab {m['vocab_size']}, vision depth "
                f"{m['vision_depth']} / embed {m['embed_dim']}); {b['samples']} samples "
                f"({b['image_hw']}x{b['image_hw']} frame, {b['seq']} tokens padded, "
                f"{b['action_tokens']} action tokens); {mach['cpus']} CPU cores, torch threads "
                f"{mach['torch_threads']}, jax {mach['jax']}, torch {mach['torch']}; medians of "
                f"{r['repeats']} steps after {r['warmup']} warm-up steps (1-min load average "
                f"at the end: {mach['load_avg_1m']})."
            ),
            "",
            "| side | what it computes | step s | samples/s | grow_jax speed-up |",
            "|---|---|---|---|---|",
        ]
        for k in ("grow_jax", "torch_full_logits", "torch_action_logits"):
            sp = "-" if k == "grow_jax" else f"{r['speedup_vs'][k]}x"
            lines.append(f"| {k} | {WHAT[k]} | {r['step_s'][k]} | {r['samples_per_s'][k]} | {sp} |")
        f = r["flops_per_step"]
        lines += [
            "",
            "First-step loss (same weights, same batch): "
            + ", ".join(f"{k} {v}" for k, v in r["first_loss"].items())
            + f". grow_jax compile + first step: {r['jax_compile_plus_first_step_s']} s.",
            "",
            (
                f"FLOPs per step: {f['analytic_matmul'] / 1e9:.2f} GFLOP analytic matmul count "
                f"(forward x3; torch's {f['analytic_matmul_torch'] / 1e9:.2f}, as it runs the "
                f"last layer at every token), {f['xla_cost_analysis'] / 1e9:.2f} GFLOP by XLA's "
                f"cost analysis. grow_jax achieves {r['achieved_gflops']['analytic']} GFLOP/s "
                f"(analytic) = {100 * r['fraction_of_matmul_peak']:.0f}% of this CPU's measured "
                f"f32 2048x2048 matmul rate ({r['matmul_f32_2048_gflops']} GFLOP/s)."
            ),
        ]
        if size != "tiny":
            lines += ["", roofline_note(r)]
    return "\n".join(lines) + "\n"


def roofline_note(r: dict) -> str:
    """How far any step doing torch_action_logits' FLOPs could get, from measured numbers."""
    f = r["flops_per_step"]
    flops, peak = f["analytic_matmul_torch"], r["matmul_f32_2048_gflops"] * 1e9
    frac = flops / r["step_s"]["torch_action_logits"] / peak
    return (
        f"Roofline: torch_action_logits runs at {100 * frac:.0f}% of the measured f32 matmul "
        f"rate, so any step doing its FLOPs could be at most {1 / frac:.2f}x faster than it; "
        f"grow_jax does {100 * (1 - f['analytic_matmul'] / flops):.0f}% fewer (last layer at "
        f"the action rows only). A larger gap needs fewer FLOPs (e.g. packing samples instead "
        f"of padding them) or a faster matmul dtype."
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
        write_section(SECTION, section(json.loads(RESULTS.read_text())))
        return
    r = {size: run(size, args) for size in args.sizes.split(",")}
    print(json.dumps(r, indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(r, indent=1) + "\n")
        write_section(SECTION, section(r))
        print(f"wrote {RESULTS} and the '{SECTION}' section of {DOC}")


if __name__ == "__main__":
    main()
