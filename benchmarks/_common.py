"""Shared by the benchmark scripts: the ~100M-parameter model they compare on, and the
regeneration of one section of docs/performance.md."""

from __future__ import annotations

import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_section(heading: str, body: str) -> None:
    """Replaces the section titled `heading` ("## ...") of docs/performance.md with `body`
    (which starts with that heading); appends it if missing; other sections are kept."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")),
                   len(lines))
        tail = "\n".join(lines[end:])
        new = "\n".join(lines[:start]) + "\n" + body + ("\n" + tail if tail else "")
    DOC.write_text(new.rstrip("\n") + "\n")


# Qwen2VLConfig.tiny(**overrides) of the "near 100M parameters" model (94.9M) that the
# sampler and train-step benchmarks compare against transformers.
MODEL_100M = {
    "vocab_size": 32000,
    "hidden_size": 640,
    "intermediate_size": 1728,
    "num_hidden_layers": 10,
    "num_attention_heads": 10,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "vision_depth": 4,
    "embed_dim": 384,
    "vision_num_heads": 6,
    "vision_mlp_ratio": 4,
    "image_token_id": 31990,
    "video_token_id": 31991,
    "vision_start_token_id": 31992,
    "vision_end_token_id": 31993,
}


def cpu_info() -> dict:
    """CPU model and the matmul-relevant ISA flags (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
    return {"model": model, "flags": [f for f in wanted if f in flags]}
