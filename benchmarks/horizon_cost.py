"""Cost of one update, GROW vs grpo_traj, as the episode horizon grows.

Same small Qwen2-VL, same number of episodes E, horizons H = 8..128 decisions. Each decision
shows one 56x56 frame (4 image tokens) and emits 3 action tokens.
- GROW: E*H state-action samples, each = instruction + the current frame + its action
  (`decision_samples`, prompts without history): a short, fixed-length sequence.
- grpo_traj: E conversations (`conversation_sample`), each = the whole episode with H frames
  and H action turns (prompts carrying the full history).
One update = one optimizer step over all samples of the E episodes (train step with
M=1, A=1). Time: median of `--repeats` steps after a warm-up step. Memory: XLA's
compiled memory analysis of the step (arguments + outputs + temporaries - aliased, i.e.
what the step needs resident on the device at its peak).

    python benchmarks/horizon_cost.py                 # writes JSON, PNG and the docs section
    python benchmarks/horizon_cost.py --horizons=8,16 --repeats=2 --no_write
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
from _common import write_section  # benchmarks/_common.py (the script dir is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "horizon_cost.json"
PLOT = ROOT / "docs" / "horizon_cost.png"
SECTION = "## GROW vs grpo_traj cost per horizon"

MODEL = {
    "vocab_size": 8192,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "vision_depth": 2,
    "embed_dim": 128,
    "vision_num_heads": 4,
    "vision_mlp_ratio": 4,
    "image_token_id": 8180,
    "video_token_id": 8181,
    "vision_start_token_id": 8182,
    "vision_end_token_id": 8183,
}
INSTRUCTION, TURN_TEXT, ACTION = 16, 2, 3  # tokens


class Opt:
    lr, warmup_steps, total_steps, schedule, final_lr_ratio = 1e-5, 0, 10**9, "constant", 0.1
    grad_clip, weight_decay, b1, b2, eps, freeze_vision = 1.0, 0.0, 0.9, 0.999, 1e-8, False


def episodes(config, n: int, horizon: int, full_history: bool, image_hw: int, seed: int = 0):
    """n random episodes of `horizon` decisions (frames, prompt text and actions random)."""
    from grow_jax.rollout.types import Step, Trajectory

    rng = np.random.default_rng(seed)
    v = config.vision
    n_img = (image_hw // v.patch_size) ** 2 // v.spatial_merge_size**2
    block = (
        [config.vision_start_token_id]
        + [config.image_token_id] * n_img
        + [config.vision_end_token_id]
    )
    hi = config.image_token_id - 1
    out = []
    for e in range(n):
        instr = rng.integers(1, hi, INSTRUCTION).tolist()
        context, steps = instr, []
        for _ in range(horizon):
            turn = block + rng.integers(1, hi, TURN_TEXT).tolist()
            prompt = np.asarray((context if full_history else instr) + turn, np.int32)
            action = rng.integers(1, hi, ACTION).astype(np.int32)
            frame = rng.integers(0, 256, (image_hw, image_hw, 3), dtype=np.uint8)
            steps.append(Step(frame, prompt, action, -rng.random(ACTION).astype(np.float32)))
            context = prompt.tolist() + action.tolist()
        out.append(Trajectory(f"ep{e}", "synthetic", 0, 0, steps))
    return out


def samples_for(algo: str, config, n_episodes: int, horizon: int, image_hw: int):
    from grow_jax.data.samples import conversation_sample, decision_samples

    rng = np.random.default_rng(1)
    trajs = episodes(config, n_episodes, horizon, algo == "grpo_traj", image_hw)
    if algo == "grpo_traj":
        return [conversation_sample(tr, rng.normal(size=horizon), config) for tr in trajs]
    return [s for tr in trajs for s in decision_samples(tr, rng.normal(size=horizon), config)]


def measure(learner, batch, repeats: int) -> dict:
    """Median step time and the compiled step's memory analysis."""
    state = learner.init_state()
    t0 = time.perf_counter()
    state, m = learner.step(state, batch)
    float(m["loss"])
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, m = learner.step(state, batch)
        float(m["loss"])
        times.append(time.perf_counter() - t0)
    (fn,) = learner._compiled.values()
    mem = fn.lower(state, batch).compile().memory_analysis()
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    return {
        "step_s": statistics.median(times),
        "step_s_all": times,
        "compile_plus_first_s": first,
        "temp_MiB": mem.temp_size_in_bytes / 2**20,
        "peak_MiB": peak / 2**20,
    }


def run(args) -> dict:
    import jax
    from flax import nnx

    from grow_jax import sharding
    from grow_jax.data.pipeline import stack_micro_batches
    from grow_jax.data.samples import BatchShape, collate
    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.train.optim import make_optimizer
    from grow_jax.train.step import Learner, LossConfig

    config = Qwen2VLConfig.tiny(**MODEL)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    rows = []
    n_params = None
    for horizon in args.horizons:
        for algo in ("grow", "grpo_traj"):
            model = sharding.shard_model(Qwen2VL(config, rngs=nnx.Rngs(0)), mesh)
            params = nnx.state(model, nnx.Param)
            n_params = n_params or sum(x.size for x in jax.tree.leaves(params))
            learner = Learner(model, make_optimizer(Opt, params), LossConfig(), mesh)
            samples = samples_for(algo, config, args.episodes, horizon, args.image_hw)
            shape = BatchShape.fit(samples, len(samples))
            batch = stack_micro_batches([collate(samples, shape, config)], 1)
            r = measure(learner, batch, args.repeats)
            decisions = args.episodes * horizon
            row = dict(
                algo=algo,
                horizon=horizon,
                episodes=args.episodes,
                samples=len(samples),
                seq=shape.seq,
                tokens=int(batch["attention_mask"].sum()),
                padded_tokens=int(np.prod(batch["input_ids"].shape)),
                images=int(sum(len(s.image_grid_thw) for s in samples)),
                ms_per_decision=1e3 * r["step_s"] / decisions,
                KiB_per_decision=r["peak_MiB"] * 1024 / decisions,
                **r,
            )
            rows.append(row)
            print(
                f"H={horizon:3d} {algo:9s} samples={len(samples):4d} seq={shape.seq:5d} "
                f"step={r['step_s']:.3f}s ({row['ms_per_decision']:.2f} ms/decision) "
                f"peak={r['peak_MiB']:.0f} MiB temp={r['temp_MiB']:.0f} MiB "
                f"(compile+first {r['compile_plus_first_s']:.1f}s)",
                flush=True,
            )
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "jax": jax.__version__,
        },
        "model": dict(params_M=round(n_params / 1e6, 2), **MODEL),
        "setup": {
            "episodes": args.episodes,
            "image_hw": args.image_hw,
            "instruction_tokens": INSTRUCTION,
            "action_tokens": ACTION,
            "repeats": args.repeats,
        },
        "rows": rows,
    }


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("step_s", "time per update (s)"),
        ("ms_per_decision", "time per decision (ms)"),
        ("peak_MiB", "step memory (MiB, XLA analysis)"),
    )
    for ax, (key, label) in zip(axes, panels):
        for algo, style in (("grow", "o-"), ("grpo_traj", "s--")):
            rows = [x for x in r["rows"] if x["algo"] == algo]
            ax.plot([x["horizon"] for x in rows], [x[key] for x in rows], style, label=algo)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("horizon H (decisions per episode)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle(
        f"One update over {r['setup']['episodes']} episodes, "
        f"{r['model']['params_M']}M-param Qwen2-VL, CPU"
    )
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def section(r: dict) -> str:
    s, m = r["setup"], r["model"]
    lines = [
        SECTION,
        "",
        (
            "Written by `benchmarks/horizon_cost.py` from `benchmarks/results/horizon_cost.json`; "
            "plot: `docs/horizon_cost.png`."
        ),
        "",
        (
            f"One optimizer step over all samples of {s['episodes']} episodes of H decisions "
            f"(a {m['params_M']}M-parameter Qwen2-VL: hidden {m['hidden_size']}, "
            f"{m['num_hidden_layers']} layers, vision depth {m['vision_depth']}; one "
            f"{s['image_hw']}x{s['image_hw']} frame and {s['action_tokens']} action tokens per "
            f"decision). GROW trains E*H short samples (instruction + current frame + action); "
            f"grpo_traj trains E conversations carrying the whole history (H frames, H action "
            f"turns). Memory = the compiled step's arguments + outputs + temporaries (XLA memory "
            f"analysis). Medians of {s['repeats']} steps; 1-min load average at the end: "
            f"{r['machine']['load_avg_1m']}."
        ),
        "",
        "| H | algo | samples | seq | images | step s | ms / decision | step MiB | temp MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['horizon']} | {x['algo']} | {x['samples']} | {x['seq']} | "
            f"{x['images']} | {x['step_s']:.3f} | {x['ms_per_decision']:.2f} | "
            f"{x['peak_MiB']:.0f} | {x['temp_MiB']:.0f} |"
        )
    lines += ["", "![cost per horizon](horizon_cost.png)", "", observations(r)]
    return "\n".join(lines) + "\n"


def observations(r: dict) -> str:
    """What the rows show, in sentences computed from them (no hand-written numbers)."""
    by = {(x["algo"], x["horizon"]): x for x in r["rows"]}
    hs = sorted({x["horizon"] for x in r["rows"]})
    lo, hi = hs[0], hs[-1]
    g = [by["grow", h]["ms_per_decision"] for h in hs]
    t = [by["grpo_traj", h]["ms_per_decision"] for h in hs]
    tok = {
        a: by[a, hi]["padded_tokens"] / (by[a, hi]["episodes"] * hi) for a in ("grow", "grpo_traj")
    }
    cross = next((h for h, a, b in zip(hs, g, t) if b > a), None)
    big_g, big_t = by["grow", hi], by["grpo_traj", hi]
    out = [
        (
            f"Observed: GROW's time per decision stays between {min(g):.2f} and {max(g):.2f} ms "
            f"from H={lo} to H={hi} (every sample is {big_g['seq']} tokens whatever the horizon); "
            f"grpo_traj's goes from {t[0]:.2f} to {t[-1]:.2f} ms ({t[-1] / t[0]:.1f}x) as its "
            f"sequence grows to {big_t['seq']} tokens."
        ),
        f"Per decision, GROW processes {tok['grow']:.1f} padded tokens (the instruction is "
        f"repeated in every sample) against grpo_traj's {tok['grpo_traj']:.1f} (the prefix is "
        f"shared), so "
        + (
            f"grpo_traj is cheaper per decision below H={cross} and dearer from H={cross} on."
            if cross
            else f"grpo_traj stays cheaper per decision up to H={hi} on this small "
            f"model and these 4-token frames: its quadratic attention term has "
            f"not yet overtaken the per-token cost of the linear layers."
        ),
        (
            f"Memory: at H={hi} grpo_traj's step needs {big_t['temp_MiB']:.0f} MiB of temporaries "
            f"for {big_t['samples']} sequences, GROW's {big_g['temp_MiB']:.0f} MiB for "
            f"{big_g['samples']}; GROW's grows only with the samples per update (linear in H here "
            f"because all E*H go into one step, constant once split into minibatches or "
            f"accumulation steps), grpo_traj's per sequence grows with its context and cannot be "
            f"split below one whole episode."
        ),
    ]
    return " ".join(out)


def write_doc(text: str) -> None:
    """Replaces only this script's section of docs/performance.md."""
    write_section(SECTION, text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--horizons", default="8,16,32,64,128", type=lambda s: [int(x) for x in s.split(",")]
    )
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--image_hw", type=int, default=56)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_write", action="store_true", help="print only")
    args = p.parse_args(argv)
    r = run(args)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(r, indent=1) + "\n")
        plot(r)
        write_doc(section(r))
        print(f"wrote {RESULTS}, {PLOT} and the '{SECTION}' section of docs/performance.md")


if __name__ == "__main__":
    main()
