"""On paper, for accelerators: roofline bounds of a config's train step and decode.

    python scripts/roofline_docs.py   # regenerates docs/performance.md's section from this

From the planner's shapes (`grow_jax.plan`: micro-batch dims, mesh, sharded parameter
counts, saved activations) this counts, per device and per optimizer update:
- FLOPs: matmuls of the decoder (attention scores over the bucketed sequence, the last
  layer at the action rows only), the output layer at the action rows and the vision
  tower, forward x3 (x4 with `model.remat`: one more forward);
- HBM bytes: gathered weights read by the forward and backward passes (again by the
  recomputing forward with remat), saved activations written then read, the gradient
  accumulator, and the guarded AdamW update (params, grads, moments read; new params and
  moments written, twice for the non-finite guard's select);
- interconnect bytes: fsdp all-gathers of the weights per pass and the reduce-scatter of
  gradients per micro-batch, tensor-parallel all-reduces of activations (2 per layer per
  pass), the data-parallel gradient all-reduce per update (ring algorithms).
The time of an update is at least the largest of compute / peak FLOP/s, HBM bytes /
bandwidth and interconnect bytes / link bandwidth (perfect overlap), at most their sum
(none); MFU = model FLOPs (forward x3) / (time x peak). These are bounds from counts, not
measurements: kernels below peak, the vision tower's short sequences and host stalls
only lower them.

Decode: one step of a batch of sequences reads every decoder + output-layer weight once
and each sequence's KV cache, and does 2 FLOPs per weight per sequence; tokens/s per
chip is the batch over the larger of the two times, for a chip holding a whole bf16 copy.
"""

from __future__ import annotations

import dataclasses

from grow_jax import plan as gplan


@dataclasses.dataclass(frozen=True)
class Chip:
    """Public per-chip figures (dense, no sparsity) and where they come from."""

    name: str
    bf16_flops: float  # peak dense bf16 matmul FLOP/s
    hbm_bw: float  # HBM bytes/s
    link_bw: float  # interconnect bytes/s per direction (what a ring collective moves)
    source: str


CHIPS = {
    "v5p": Chip("TPU v5p", 459e12, 2765e9, 600e9,
                "Google Cloud TPU v5p documentation (cloud.google.com/tpu/docs/v5p): 459 "
                "TFLOP/s bf16, 2,765 GB/s HBM2e, 4,800 Gbps inter-chip interconnect "
                "(600 GB/s; 1,200 GB/s bidirectional)"),
    "H100": Chip("H100 SXM", 989e12, 3.35e12, 450e9,
                 "NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): 1,979 TFLOP/s "
                 "bf16 Tensor Core with sparsity = 989 dense, 3.35 TB/s HBM3, NVLink "
                 "900 GB/s bidirectional (450 GB/s per direction)"),
    "H200": Chip("H200 SXM", 989e12, 4.8e12, 450e9,
                 "NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): 1,979 TFLOP/s "
                 "bf16 Tensor Core with sparsity = 989 dense, 4.8 TB/s HBM3e, NVLink "
                 "900 GB/s bidirectional (450 GB/s per direction)"),
}


def _split(n: int, parts: int) -> int:
    return n // parts if n % parts == 0 else n


def forward_flops(mcfg, dims: gplan.BatchDims) -> float:
    """Matmul FLOPs of one forward pass over a micro-batch (global, all devices)."""
    t, v = mcfg.text, mcfg.vision
    B, T, K = dims.batch, dims.seq, dims.targets
    d, hd = t.hidden_size, t.head_dim
    nq, nk, f = t.num_attention_heads, t.num_key_value_heads, t.intermediate_size
    kv = 2 * 2 * d * nk * hd  # k and v projections, per token
    query = 2 * (2 * d * nq * hd + 3 * d * f) + 4 * T * nq * hd  # q, o, MLP, scores + PV
    L = t.num_hidden_layers
    text = B * T * (L - 1) * (kv + query) + B * (T * kv + K * query)
    text += B * K * 2 * d * t.vocab_size
    P, e, m = dims.patches, v.embed_dim, v.mlp_dim
    block = 2 * (4 * e * e + 2 * e * m) + 4 * P * e
    merged = P // v.spatial_merge_size**2
    vision = dims.images * (P * (2 * v.patch_dim * e + v.depth * block)
                            + merged * 2 * (v.merge_dim**2 + v.merge_dim * v.hidden_size))
    return float(text + vision)


def train_update(mcfg, mesh: gplan.MeshShape, dims: gplan.BatchDims, accumulation: int,
                 remat: bool, chip: Chip) -> dict:
    """Per-device FLOPs, HBM and interconnect bytes of one update, and its time/MFU bounds."""
    n = mesh.devices
    c = gplan._DTYPE_BYTES[mcfg.dtype]
    pb = gplan._DTYPE_BYTES[mcfg.param_dtype]
    total, shard = gplan.sharded_param_elems(mcfg, mesh)
    gathered = shard * mesh.fsdp  # the weights one device computes with (its tensor shard)
    fwd = forward_flops(mcfg, dims)
    model_flops = 3 * fwd * accumulation / n
    hw_flops = (4 if remat else 3) * fwd * accumulation / n
    passes = 3 if remat else 2  # weight reads: forward, backward (+ recomputing forward)
    acts = gplan.activation_bytes(mcfg, dims, mesh, remat)
    hbm = accumulation * (passes * gathered * c + gathered * c  # reads + gradient write
                          + 2 * sum(acts.values())  # saved activations: write, then read
                          + 2 * shard * pb)  # accumulator read-modify-write
    hbm += 13 * shard * pb  # AdamW + guard: read p, g, m, v (4); write p, m, v twice (6); +3
    fs, tp, dp = mesh.fsdp, mesh.tensor, mesh.data
    comm = accumulation * (passes * (fs - 1) / fs * gathered * c  # all-gathers of weights
                           + (fs - 1) / fs * gathered * pb)  # reduce-scatter of gradients
    t = mcfg.text
    b_dev = _split(dims.batch, dp * fs)
    act = b_dev * dims.seq * t.hidden_size * c
    comm += accumulation * (2 if not remat else 3) * 2 * t.num_hidden_layers * (
        2 * (tp - 1) / tp * act)  # two all-reduces per layer per pass
    comm += 2 * (dp - 1) / dp * shard * pb  # data-parallel gradient all-reduce
    times = dict(compute=hw_flops / chip.bf16_flops, hbm=hbm / chip.hbm_bw,
                 interconnect=comm / chip.link_bw)
    best, worst = max(times.values()), sum(times.values())
    return dict(params=total, model_flops=model_flops, hw_flops=hw_flops, hbm_bytes=hbm,
                comm_bytes=comm, times=times, bound=max(times, key=times.get),
                mfu_overlap=model_flops / (best * chip.bf16_flops),
                mfu_serial=model_flops / (worst * chip.bf16_flops),
                samples_per_s=dims.batch * accumulation / best)


def decode_bound(mcfg, batch: int, cache_len: int, chip: Chip, weight_bytes: int = 2) -> dict:
    """Tokens/s bound of one chip decoding `batch` sequences at `cache_len` cached tokens
    with a whole copy of the decoder and output layer (`weight_bytes` per weight)."""
    t = mcfg.text
    d, hd, L = t.hidden_size, t.head_dim, t.num_hidden_layers
    nq, nk, f = t.num_attention_heads, t.num_key_value_heads, t.intermediate_size
    layer = d * (nq + 2 * nk) * hd + nq * hd * d + 3 * d * f
    weights = L * layer + d * t.vocab_size * (1 if t.tie_word_embeddings else 2)
    kv = 2 * L * cache_len * nk * hd * gplan._DTYPE_BYTES[mcfg.dtype]  # per sequence
    read = weights * weight_bytes + batch * kv
    flops = batch * (2 * (L * layer + d * t.vocab_size) + 4 * L * cache_len * nq * hd)
    step = max(read / chip.hbm_bw, flops / chip.bf16_flops)
    return dict(tokens_per_s=batch / step, step_s=step,
                bound="HBM" if read / chip.hbm_bw >= flops / chip.bf16_flops else "compute")


RUNS = (("configs/qwen2_vl_7b_tpu.py", 32, ("v5p",), "a v5p-64 slice (32 chips)"),
        ("configs/qwen2_vl_7b_gpu.py", 8, ("H100", "H200"), "one node of 8x H100 / H200"))
DECODE_BATCHES = (1, 16, 64, 256)


def section() -> str:
    """docs/performance.md's "Accelerators (on paper)" section."""
    import importlib.util
    from pathlib import Path

    from grow_jax import config_utils

    root = Path(__file__).resolve().parents[1]

    def load(path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return config_utils.resolve_config(module.get_config())

    out = ["## Accelerators (on paper)", "",
           "Generated by `python scripts/roofline_docs.py` from `grow_jax/roofline.py` (counts "
           "from `grow_jax.plan`'s shapes; see its docstring for what is counted); no "
           "figure here is measured. Peak figures used (dense bf16, per chip):", ""]
    for chip in CHIPS.values():
        out.append(f"- {chip.name}: {chip.bf16_flops / 1e12:.0f} TFLOP/s, HBM "
                   f"{chip.hbm_bw / 1e9:,.0f} GB/s, interconnect {chip.link_bw / 1e9:.0f} GB/s "
                   f"per direction. Source: {chip.source}.")
    out += ["", "### 7B train step (one update)", "",
            "| config | chip | mesh (data x fsdp x tensor) | micro-batch x accumulation | "
            "remat | TFLOP/device (model / executed) | HBM GB/device | interconnect "
            "GB/device | compute / HBM / link s | bound by | MFU bound (overlap / serial) | "
            "samples/s bound |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    decode_rows = []
    for path, devices, chips, what in RUNS:
        config = load(path)
        mcfg = gplan.config_model(config)
        dims, sampler_batch, cache_len = gplan.config_dims(config, mcfg)
        mesh = gplan.config_mesh(config, devices)
        for name in chips:
            chip = CHIPS[name]
            r = train_update(mcfg, mesh, dims, config.rl.accumulation, bool(config.model.remat),
                             chip)
            tm = r["times"]
            out.append(
                f"| `{path}` ({what}) | {chip.name} | {mesh.data} x {mesh.fsdp} x "
                f"{mesh.tensor} | {dims.batch} x {config.rl.accumulation} ({dims.seq} tokens)"
                f" | {bool(config.model.remat)} | {r['model_flops'] / 1e12:.1f} / "
                f"{r['hw_flops'] / 1e12:.1f} | {r['hbm_bytes'] / 1e9:.0f} | "
                f"{r['comm_bytes'] / 1e9:.0f} | {tm['compute']:.2f} / {tm['hbm']:.2f} / "
                f"{tm['interconnect']:.2f} | {r['bound']} | {100 * r['mfu_overlap']:.0f}% / "
                f"{100 * r['mfu_serial']:.0f}% | {r['samples_per_s']:.0f} |")
            decode_rows.append((chip, mcfg, cache_len))
    out += ["", "MFU bound: `overlap` assumes compute, HBM traffic and interconnect fully "
            "overlap and matmuls at peak (an upper bound: expect less); `serial` adds the "
            "three times as if nothing overlapped. A well-tuned step lands between the two, "
            "nearer the first when XLA's latency-hiding scheduler overlaps the fsdp "
            "collectives with compute (on by default on TPU; on GPU "
            "`--xla_gpu_enable_latency_hiding_scheduler=true` in `XLA_FLAGS`).", "",
            "Model FLOPs count forward x3 (what MFU is defined on); executed FLOPs add "
            "remat's recomputing forward, so remat alone caps MFU at 75%. The vision tower "
            "is counted at one image slot per sample of `env.image_size`^2 patches; the "
            "sequence is the planner's bucket of `agent.max_prompt_tokens + "
            "agent.max_new_tokens` (padding included, so packing real, shorter prompts "
            "raises samples/s but not these bounds).", "",
            "### Decode bound per chip", "",
            f"One chip holding a whole bf16 copy of the decoder and output layer, KV cache "
            f"in the compute dtype at the config's cache length; tokens/s = batch / max(bytes "
            f"read / HBM bandwidth, FLOPs / peak). Batches {', '.join(map(str, DECODE_BATCHES))}"
            " sequences.", "",
            "| chip | cache slots | " + " | ".join(f"batch {b} tok/s" for b in DECODE_BATCHES)
            + " | f32 weights, batch 1 |",
            "|---|---|" + "---|" * (len(DECODE_BATCHES) + 1)]
    seen = set()
    for chip, mcfg, cache_len in decode_rows:
        if chip.name in seen:
            continue
        seen.add(chip.name)
        cells = []
        for b in DECODE_BATCHES:
            r = decode_bound(mcfg, b, cache_len, chip)
            cells.append(f"{r['tokens_per_s']:,.0f}" + (" (compute)" if r["bound"] == "compute"
                                                       else ""))
        f32 = decode_bound(mcfg, 1, cache_len, chip, weight_bytes=4)["tokens_per_s"]
        out.append(f"| {chip.name} | {cache_len} | " + " | ".join(cells) + f" | {f32:,.0f} |")
    out += ["", "Decode is bound by reading the weights until the batch is large enough to "
            "reuse them (then by the KV cache reads, which grow with the batch): the per-chip "
            "figure scales with the batch only while HBM-bound. With `model.param_dtype = "
            "float32` and no bf16 copy for sampling, weights read twice the bytes (last "
            "column)."]
    return "\n".join(out) + "\n"
