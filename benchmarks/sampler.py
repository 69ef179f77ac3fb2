"""Sampler throughput: grow_jax `Sampler` vs transformers `generate` (PyTorch CPU), side by side.

Same random weights on both sides (torch model -> grow_jax params table), the same batch
of image prompts (left-padded, different lengths), greedy, exactly `--new_tokens` new
tokens (no stop token). For each side it times end-to-end calls (prefill + decode) and
prefill-only calls (1 new token); decode tokens/s = B * (N - 1) / (t_N - t_1).
JAX compile time is measured once and reported separately. Each dtype in `--dtypes` runs
both libraries in it (float32; bfloat16: grow_jax's `Sampler(dtype="bfloat16")` and the
torch model cast to bf16, which PyTorch runs through AMX where the CPU has it), so every
ratio compares equal dtypes; grow_jax bf16 is also compared with its own float32
(greedy tokens, and the log-probabilities of the tokens both chose).

    python benchmarks/sampler.py                 # tiny + ~100M, writes results + docs
    python benchmarks/sampler.py --sizes=tiny --repeats=3

Writes benchmarks/results/sampler/<CPU kind>.json (other CPU kinds' files are kept) and
regenerates the "Sampler" section of docs/performance.md from all of them; `--doc_only`
only regenerates the section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import goals  # benchmarks/goals.py: the issue-13 table over all CPU kinds
from _common import (  # benchmarks/_common.py (the script dir is on sys.path)
    MODEL_100M,
    cpu_info,
    machines_section,
    save_results,
    stored_results,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
NAME, SECTION = "sampler", "## Sampler"

# name -> Qwen2VLConfig.tiny overrides
SIZES = {
    "tiny": {},
    "100m": MODEL_100M,
}


def build(size: str, seed: int = 0):
    """(config, torch model, grow_jax model) with identical weights."""
    import torch
    import transformers
    from flax import nnx

    from grow_jax.models.qwen2_vl import params as qparams
    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    config = Qwen2VLConfig.tiny(**SIZES[size])
    torch.manual_seed(seed)
    hf = config.to_hf()
    for part in (hf, hf["text_config"]):  # the hub default ids exceed our vocab
        part.update(bos_token_id=None, eos_token_id=None)
    hf_cfg = transformers.Qwen2VLConfig.from_dict(hf)
    tmodel = transformers.Qwen2VLForConditionalGeneration(hf_cfg).eval().float()
    tensors = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    model = Qwen2VL(config, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, qparams.state_from_hf(tensors, config))
    nnx.update(model, state)
    return config, tmodel, model


def make_batch(config, batch: int, image_hw: int, seed: int = 0):
    """Token prompts (text, <vs> image tokens <ve>, text; different lengths) and one image each."""
    from grow_jax.models.qwen2_vl import inputs as qinputs

    rng = np.random.default_rng(seed)
    merge, ps = config.vision.spatial_merge_size, config.vision.patch_size
    n_img = (image_hw // ps) ** 2 // merge**2
    vocab_hi = min(config.text.vocab_size, config.image_token_id) - 1
    prompts, images = [], []
    for _ in range(batch):
        head = rng.integers(1, vocab_hi, int(rng.integers(8, 24))).tolist()
        tail = rng.integers(1, vocab_hi, int(rng.integers(4, 12))).tolist()
        ids = head + [config.vision_start_token_id] + [config.image_token_id] * n_img
        prompts.append(np.asarray(ids + [config.vision_end_token_id] + tail, np.int32))
        img = rng.integers(0, 256, (image_hw, image_hw, 3), dtype=np.uint8)
        images.append(qinputs.images_to_patches([img], config))
    return prompts, images


class JaxSide:
    def __init__(self, model, batch_images, new_tokens: int, dtype: str):
        import jax
        from flax import nnx

        from grow_jax.sampling.generate import Sampler, SamplingParams

        self.jax = jax
        self.params = jax.device_put(nnx.state(model, nnx.Param))  # numpy leaves -> device once
        self.prompts, self.images = batch_images
        self.samplers = {
            n: Sampler(model, SamplingParams(max_new_tokens=n, temperature=0.0), dtype=dtype)
            for n in (1, new_tokens)
        }
        self.logprobs = None  # of the last N-token run

    def run(self, n: int):
        toks, logps = self.samplers[n].sample(
            self.params, self.prompts, self.images, rng=self.jax.random.key(0)
        )
        if n > 1:
            self.logprobs = np.stack(logps)
        return np.stack(toks)


class TorchSide:
    def __init__(self, tmodel, config, batch_images, dtype: str):
        import copy

        import torch

        dt = getattr(torch, dtype)
        self.torch, self.tmodel = torch, copy.deepcopy(tmodel).to(dt)
        prompts, images = batch_images
        t = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), t), np.int64)
        mask = np.zeros((len(prompts), t), np.int64)
        for i, p in enumerate(prompts):
            ids[i, t - len(p) :] = p
            mask[i, t - len(p) :] = 1
        self.inputs = {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "pixel_values": torch.tensor(np.concatenate([im[0] for im in images])).to(dt),
            "image_grid_thw": torch.tensor(np.concatenate([im[1] for im in images])),
            "mm_token_type_ids": torch.tensor((ids == config.image_token_id).astype(np.int64)),
        }
        self.tmodel.generation_config.eos_token_id = None
        self.tmodel.generation_config.pad_token_id = 0

    def run(self, n: int):
        with self.torch.no_grad():
            out = self.tmodel.generate(
                **self.inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False
            )
        return out[:, self.inputs["input_ids"].shape[1] :].numpy()


def _timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t0, out


SHORT = {"float32": "f32", "bfloat16": "bf16"}


def bench_size(size: str, args) -> dict:
    config, tmodel, model = build(size)
    n_params = sum(p.numel() for p in tmodel.parameters())
    data = make_batch(config, args.batch, args.image_hw)
    n = args.new_tokens
    sides = {}
    for dt in args.dtypes.split(","):
        sides[f"jax_{SHORT[dt]}"] = JaxSide(model, data, n, dt)
        sides[f"torch_{SHORT[dt]}"] = TorchSide(tmodel, config, data, dt)
    compile_s = {name: {} for name in sides if name.startswith("jax")}
    for name in compile_s:
        for k in (1, n):  # first call per shape = compile + one run
            compile_s[name][k], _ = _timed(sides[name].run, k)
    for name, side in sides.items():
        if name.startswith("torch"):
            side.run(1), side.run(n)  # warm-up
    times = {(name, k): [] for name in sides for k in (1, n)}
    tokens = {}
    for _ in range(args.repeats):  # interleaved, so machine load hits every side alike
        for k in (1, n):
            for name, side in sides.items():
                dt, out = _timed(side.run, k)
                times[name, k].append(dt)
                if k == n:
                    tokens[name] = out
    res = {
        "params_M": round(n_params / 1e6, 2),
        "prompt_tokens": [int(min(map(len, data[0]))), int(max(map(len, data[0])))],
    }
    b = args.batch
    for name in sides:
        t1, tn = statistics.median(times[name, 1]), statistics.median(times[name, n])
        res[name] = {
            "prefill_s": round(t1, 4),
            "total_s": round(tn, 4),
            "e2e_tokens_per_s": round(b * n / tn, 1),
            "decode_tokens_per_s": round(b * (n - 1) / max(tn - t1, 1e-9), 1),
            "runs_total_s": [round(x, 4) for x in times[name, n]],
        }
        if name in compile_s:
            res[name]["compile_plus_first_run_s"] = {
                str(k): round(v, 2) for k, v in compile_s[name].items()}
    res["pairs"] = {}
    pairs = [(f"jax_{d}", f"torch_{d}") for d in map(SHORT.get, args.dtypes.split(","))]
    if "jax_bf16" in sides:
        pairs += [("jax_bf16", "torch_f32"), ("jax_bf16", "jax_f32")]
    for a, c in pairs:
        if a in sides and c in sides:
            res["pairs"][f"{a}/{c}"] = {
                key: round(res[a][key] / res[c][key], 2)
                for key in ("e2e_tokens_per_s", "decode_tokens_per_s")
            } | {"greedy_tokens_equal_frac": float((tokens[a] == tokens[c]).mean())}
    if "jax_bf16" in sides and "jax_f32" in sides:
        rows = (tokens["jax_bf16"] == tokens["jax_f32"]).all(axis=1)
        if rows.any():  # logprobs of the same tokens (rows whose greedy tokens all agree)
            err = np.abs(sides["jax_bf16"].logprobs - sides["jax_f32"].logprobs)[rows]
            res["bf16_logprob_err"] = {"rows": int(rows.sum()), "mean": float(err.mean()),
                                       "max": float(err.max())}
    return res


INTRO = [
    "grow_jax `Sampler` vs transformers `generate`: a batch of image prompts (left-padded), "
    "greedy, exactly N new tokens, same weights; medians of interleaved runs. Decode "
    "tokens/s = B*(N-1) / (t_N - t_1).",
    "",
    "Sides: `jax_f32`/`torch_f32` float32, `jax_bf16` grow_jax `Sampler(dtype=\"bfloat16\")` "
    "(bf16 weights, activations and KV cache), `torch_bf16` the transformers model cast to "
    "bf16. Compile s: first call incl. compilation, for the 1-token and the N-token shapes. "
    "Greedy tokens can differ where random weights give near-tied logits (op-order and "
    "rounding differences). PyTorch's 2 OpenMP threads slow down far more than XLA when "
    "other processes share the cores, so ratios measured under load overstate the "
    "idle-machine speed-up.",
    "",
    "Not built: prefilling a group's shared prompt prefix once. The agent's prompt "
    "(grow_jax/agent/prompts.py) puts the frame before the instruction, as Qwen2-VL's chat "
    "layout does, so the G rows of a group share only the user-turn header and "
    "`<|vision_start|>`; every key and value after it depends on the row's own frame.",
]


def section(stored: dict[str, dict]) -> str:
    """The "Sampler" section of docs/performance.md: one subsection per stored CPU kind."""
    return machines_section(SECTION, NAME, INTRO, stored, render)


def render(results: dict) -> list[str]:
    """One machine's settings, tables and notes."""
    s = results["settings"]
    lines = [
        (
            f"transformers {s['transformers']} (torch {s['torch']}, {s['torch_threads']} "
            f"threads), jax {s['jax']}, on {s['machine']}. Batch of {s['batch']} image prompts "
            f"({s['image_hw']}x{s['image_hw']} images), {s['new_tokens']} new tokens, medians "
            f"of {s['repeats']}. Load average (start / end): {s['load_avg_start']} / "
            f"{s['load_avg_end']} (above ~1 means other processes shared the cores)."
        ),
        "",
        "| model | params | side | prefill s | total s | e2e tok/s | decode tok/s | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, r in results["sizes"].items():
        for side in (k for k in r if k.startswith(("jax_", "torch_"))):
            x = r[side]
            comp = " / ".join(f"{v}" for v in x.get("compile_plus_first_run_s", {}).values())
            lines.append(
                f"| {size} | {r['params_M']}M | {side} | {x['prefill_s']} | "
                f"{x['total_s']} | {x['e2e_tokens_per_s']} | "
                f"{x['decode_tokens_per_s']} | {comp or '-'} |"
            )
    lines += [
        "",
        "| model | pair | e2e speed-up | decode speed-up | greedy tokens equal |",
        "|---|---|---|---|---|",
    ]
    for size, r in results["sizes"].items():
        for pair, x in r["pairs"].items():
            lines.append(
                f"| {size} | {pair} | {x['e2e_tokens_per_s']}x | "
                f"{x['decode_tokens_per_s']}x | {x['greedy_tokens_equal_frac']:.3f} |"
            )
    errs = [(size, r["bf16_logprob_err"]) for size, r in results["sizes"].items()
            if "bf16_logprob_err" in r]
    if errs:
        lines += ["", "grow_jax bf16 decode vs its float32, log-probabilities of the same "
                  "greedy tokens: " + "; ".join(
                      f"{size}: mean {e['mean']:.2g}, max {e['max']:.2g} nats over "
                      f"{e['rows']} rows" for size, e in errs)
                  + ". RL with `agent.decode_dtype=bfloat16` therefore re-scores them in the "
                  "learner (`algo.recompute_old_logprobs=True`, which the config check "
                  "requires); its `old_logprob_err_mean/max` metrics report the live "
                  "difference."]
    return lines + _torch_bf16_user(results)


def _torch_bf16_user(results: dict) -> list[str]:
    """What a PyTorch user who runs `generate` in bf16 on this CPU gets from grow_jax's
    faster side (the issue asks it plainly: on an AMX CPU torch's bf16 is its fast path)."""
    out = []
    for size, r in results["sizes"].items():
        if "torch_bf16" not in r:
            continue
        jax_sides = [k for k in r if k.startswith("jax_")]
        best = max(jax_sides, key=lambda k: r[k]["e2e_tokens_per_s"])
        t, j = r["torch_bf16"], r[best]
        out.append(
            f"{size}: torch bf16 `generate` {t['e2e_tokens_per_s']} tok/s end to end, "
            f"grow_jax's faster side ({best}) {j['e2e_tokens_per_s']} = "
            f"{j['e2e_tokens_per_s'] / t['e2e_tokens_per_s']:.2f}x "
            f"(decode {j['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}x)")
    if not out:
        return []
    amx = "amx_bf16" in results["settings"]["machine"]
    return ["", f"What a PyTorch user running bf16 on this CPU "
            f"({'with' if amx else 'without'} AMX) would see: " + "; ".join(out) + "."]


def _machine() -> str:
    """CPU model, matmul ISA flags and core count: a ratio is never read off another CPU."""
    cpu = cpu_info()
    return f"{cpu['model']} ({', '.join(cpu['flags']) or 'no AVX2+'}), {os.cpu_count()} CPUs"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="tiny,100m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--image_hw", type=int, default=112)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="each runs both libraries in that dtype")
    p.add_argument("--no_write", action="store_true", help="print only")
    p.add_argument("--doc_only", action="store_true",
                   help="regenerate the docs section from the stored results")
    args = p.parse_args(argv)
    if args.doc_only:
        write_section(SECTION, section(stored_results(NAME)))
        goals.write()
        return

    import jax
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    results = {
        "settings": {
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "image_hw": args.image_hw,
            "repeats": args.repeats,
            "torch_threads": args.threads,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": _machine(),
            "dtypes": args.dtypes,
            "load_avg_start": round(os.getloadavg()[0], 2),
        },
        "sizes": {},
    }
    for size in args.sizes.split(","):
        print(f"== {size}", file=sys.stderr, flush=True)
        results["sizes"][size] = bench_size(size, args)
        print(json.dumps(results["sizes"][size], indent=1), file=sys.stderr, flush=True)
    results["settings"]["load_avg_end"] = round(os.getloadavg()[0], 2)
    print("\n".join(render(results)))
    if not args.no_write:
        print(f"wrote {save_results(NAME, results)}", file=sys.stderr)
        write_section(SECTION, section(stored_results(NAME)))
        goals.write()


if __name__ == "__main__":
    main()
