"""The speed goals of issue 13 on every CPU kind, read off the stored results of
benchmarks/sampler.py, train_step.py and rollout.py (one column per CPU kind that has them).

    python benchmarks/goals.py      # regenerates the section; the three scripts call it too

A goal holds only where it holds on every kind: the issue asks for both the AMD EPYC and
the Intel Xeon with AMX, at equal dtype.
"""

from __future__ import annotations

from _common import stored_results, write_section  # benchmarks/_common.py

SECTION = "## Goals of issue 13 on every CPU kind"


def _sampler(r: dict, pair: str) -> float | None:
    return r["sizes"].get("100m", {}).get("pairs", {}).get(pair, {}).get("e2e_tokens_per_s")


def _torch_bf16_user_sampler(r: dict) -> float | None:
    """Faster grow_jax side over torch bf16 `generate`, end to end (100m)."""
    x = r["sizes"].get("100m", {})
    if "torch_bf16" not in x:
        return None
    best = max(x[k]["e2e_tokens_per_s"] for k in x if k.startswith("jax_"))
    return best / x["torch_bf16"]["e2e_tokens_per_s"]


def _train(r: dict, ref: str) -> float | None:
    """The faster grow_jax f32 side (padded or packed) over a torch f32 step (100m)."""
    sp = r.get("100m", {}).get("speedup_vs", {})
    vals = [v[ref] for v in sp.values() if ref in v]
    return max(vals) if vals else None


def _train_bf16(r: dict, key: str) -> float | None:
    return r.get("100m", {}).get("bf16_vs", {}).get(key)


def _rollout(r: dict) -> float | None:
    """Pipelined loop over the faster env-only pool at 32 envs."""
    row = next((x for x in r["rows"] if x["envs"] == 32), None)
    return row and row["pipe_async"] / max(row["envs_sync"], row["envs_async"])


# (what, goal or None for a figure without a bar, benchmark, getter, format)
ROWS = (
    ("sampler, ~100M, end to end vs `generate`, f32", 2.0, "sampler",
     lambda r: _sampler(r, "jax_f32/torch_f32"), "{:.2f}x"),
    ("sampler, ~100M, end to end vs `generate`, bf16 both", 2.0, "sampler",
     lambda r: _sampler(r, "jax_bf16/torch_bf16"), "{:.2f}x"),
    ("train step, ~100M, vs torch full logits, f32", 1.5, "train_step",
     lambda r: _train(r, "torch_full_logits"), "{:.2f}x"),
    ("train step, ~100M, vs torch action logits, f32", 1.25, "train_step",
     lambda r: _train(r, "torch_action_logits"), "{:.2f}x"),
    ("train step, ~100M, vs torch action logits, bf16 both", 1.25, "train_step",
     lambda r: _train_bf16(r, "grow_jax_bf16/torch_action_logits_bf16"), "{:.2f}x"),
    ("rollout loop at 32 envs, share of the envs' own speed", 0.7, "rollout",
     _rollout, "{:.0%}"),
    ("a torch bf16 user: grow_jax's faster sampler over torch bf16 `generate`", None,
     "sampler", _torch_bf16_user_sampler, "{:.2f}x"),
    ("a torch bf16 user: torch bf16 autocast step over grow_jax's f32 step", None,
     "train_step", lambda r: _train_bf16(r, "torch_action_logits_bf16/grow_jax"), "{:.2f}x"),
)


def section(stored: dict[str, dict[str, dict]]) -> str:
    """`stored`: benchmark name -> CPU kind -> results."""
    kinds = sorted({k for by_kind in stored.values() for k in by_kind})
    lines = [SECTION, "", "Written by `benchmarks/goals.py` from the stored results of the "
             "sampler, train-step and rollout benchmarks below (their sections give the "
             "machines, loads and commands); do not edit by hand. A cell reads "
             "'value (met / not met)'; '-' where that benchmark has not been run on that "
             "kind. Decode against the weight-read limit is not in these results: "
             "`python benchmarks/decode_step.py` prints it.", "",
             "| goal | bar | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for what, bar, name, get, fmt in ROWS:
        cells = []
        for kind in kinds:
            r = stored.get(name, {}).get(kind)
            v = get(r) if r is not None else None
            if v is None:
                cells.append("-")
            else:
                cells.append(fmt.format(v) + ("" if bar is None else
                                              f" ({'met' if v >= bar else 'not met'})"))
        lines.append(f"| {what} | {'-' if bar is None else '>= ' + fmt.format(bar)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stored() -> dict[str, dict[str, dict]]:
    return {name: stored_results(name) for name in ("sampler", "train_step", "rollout")}


def write() -> None:
    write_section(SECTION, section(stored()))


if __name__ == "__main__":
    write()
