"""Regenerates BUILD.md's "Memory planner" section from `python -m grow_jax.plan` runs of
the 7B configs (so no figure there is typed by hand).

    python scripts/plan_docs.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "BUILD.md"
HEADING = "## Memory planner"
RUNS = (("configs/qwen2_vl_7b_tpu.py", 32, "a v5p-64 slice (32 chips)"),
        ("configs/qwen2_vl_7b_gpu.py", 8, "one node of 8x H100 / H200"))

INTRO = """\
`python -m grow_jax.plan --config=CONFIG [--devices=N] [--accelerator=NAME]` prints what one
device holds for a config's mesh and batch, whether that fits a v5e (16 GiB), v5p (95),
v6e (32), H100 (80) or H200 (141), and a mesh that fits when the config's does not. Its
arithmetic: parameters, gradients and AdamW's two moments are exact (the model's parameter
shapes through the sharding rules); activations are a per-layer model of what the backward
pass keeps (residual stream, norms, q/k/v, f32 attention probabilities, MLP gates) for one
micro-batch of `rl.minibatch_size / rl.accumulation` samples of `agent.max_prompt_tokens +
agent.max_new_tokens` tokens with one `env.image_size` frame each; with `model.remat` only
each decoder layer's input is kept (the vision tower is not recomputed). The peak is the
resident state plus gradients plus the larger of two phases: the forward/backward pass
(gathered fsdp weights + activations) and the update, where the non-finite-update guard
builds the new parameters and AdamW moments beside the old ones before it selects.
tests/test_plan.py holds these figures within 15% of XLA's `memory_analysis()` of the
compiled train step for the tiny and a ~100M model on CPU, with each phase as the peak
(without remat: XLA's CPU scheduler hoists recomputation, so remat's saving only shows on
an accelerator). Regenerate this section with `python scripts/plan_docs.py`.
"""


def section() -> str:
    parts = [HEADING, "", INTRO]
    for cfg, n, what in RUNS:
        cmd = [sys.executable, "-m", "grow_jax.plan", f"--config={cfg}", f"--devices={n}"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        parts += [f"`python -m grow_jax.plan --config={cfg} --devices={n}` ({what}):", "",
                  "```", out.rstrip(), "```", ""]
    return "\n".join(parts)


def main() -> None:
    lines = DOC.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == HEADING), None)
    body = section().rstrip("\n").splitlines()
    if start is None:
        lines += [""] + body
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")),
                   len(lines))
        lines = lines[:start] + body + [""] + lines[end:]
    DOC.write_text("\n".join(lines).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
