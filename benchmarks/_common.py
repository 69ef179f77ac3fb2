"""Shared by the benchmark scripts: the ~100M-parameter model they compare on, results
stored per CPU kind, and the regeneration of one section of docs/performance.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from grow_jax.hostinfo import cpu_info  # re-exported: the benchmarks record it

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"


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


def cpu_kind(cpu: dict | None = None) -> str:
    """The file key of a CPU kind: vendor and family from the model name, plus "-amx" where
    the CPU has AMX (it changes which library's bf16 is fast) and "-avx2" where it lacks
    AVX-512 (e.g. an EPYC of the Zen 3 generation against Zen 4's): "intel-xeon-amx",
    "amd-epyc", "amd-epyc-avx2". A ratio is only comparable with one measured on the same kind."""
    cpu = cpu or cpu_info()
    words = re.sub(r"\((R|TM)\)", " ", cpu["model"]).split()
    key = "-".join(w.lower() for w in words[:2] if re.fullmatch(r"[A-Za-z]+", w)) or "cpu"
    return (key + ("-amx" if "amx_tile" in cpu["flags"] else "")
            + ("" if "avx512f" in cpu["flags"] else "-avx2"))


def results_file(name: str, kind: str | None = None) -> Path:
    """benchmarks/results/NAME/KIND.json: one benchmark's results on one CPU kind."""
    return RESULTS_DIR / name / f"{kind or cpu_kind()}.json"


def save_results(name: str, results: dict) -> Path:
    """Stores this machine's results; other CPU kinds' files are kept."""
    path = results_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def stored_results(name: str) -> dict[str, dict]:
    """Every CPU kind's stored results of one benchmark, by kind (sorted)."""
    return {p.stem: json.loads(p.read_text())
            for p in sorted((RESULTS_DIR / name).glob("*.json"))}


def machines_section(heading: str, name: str, intro: list[str], stored: dict[str, dict],
                     block: Callable[[dict], list[str]], script: str | None = None) -> str:
    """A docs section with one subsection per CPU kind: `heading`, where the figures come
    from, `intro` (what is measured, the same on every machine), then for each stored kind
    "### <kind>" and `block(results)` (that machine's settings, tables and notes)."""
    script = script or f"benchmarks/{name}.py"
    lines = [heading, "", f"Written by `{script}` from `benchmarks/results/{name}/<CPU kind>"
             ".json` (one file per CPU kind; a run replaces only its own machine's); do not "
             "edit by hand. Ratios compare sides measured together on one machine: read them "
             "within one subsection, never across.", "", *intro]
    if not stored:
        raise FileNotFoundError(f"no stored results in {RESULTS_DIR / name}: run {script}")
    for kind, results in stored.items():
        lines += ["", f"### {kind}", "", *block(results)]
    return "\n".join(lines).rstrip("\n") + "\n"
