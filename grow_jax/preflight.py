"""Checks run before a mode touches the workdir (docs/reliability.md): each failure is one
line naming the key or file and what was expected, and the workdir is left as it was.

- mesh: data x fsdp x tensor must use exactly the devices of this run;
- batches: rl.minibatch_size must split into rl.accumulation micro-batches that divide
  data x fsdp, and sft.batch_size must divide data x fsdp (else a silently replicated batch);
- model.require_weights: a weight source (checkpoint, rl.init_checkpoint, model.hf_dir);
- sft.demo_path: an ArrayRecord file of grow_jax decision records (frame, instruction,
  action).
"""

from __future__ import annotations

import os


class PreflightError(ValueError):
    """A run input that cannot work; the message names the key or file."""


def check_mesh(config, n_devices: int) -> int:
    """The data x fsdp size of the mesh config.mesh gives on `n_devices` devices."""
    m = config.mesh
    fixed = m.fsdp * m.tensor
    if m.fsdp < 1 or m.tensor < 1 or (m.data != -1 and m.data < 1):
        raise PreflightError(f"mesh.data={m.data}, mesh.fsdp={m.fsdp}, mesh.tensor={m.tensor}: "
                             "axis sizes must be >= 1 (mesh.data may be -1)")
    data = m.data if m.data != -1 else n_devices // fixed
    if data < 1 or data * fixed != n_devices:
        raise PreflightError(
            f"mesh.data={m.data} x mesh.fsdp={m.fsdp} x mesh.tensor={m.tensor} does not divide "
            f"the {n_devices} devices of this run (the product must equal {n_devices})")
    return data * m.fsdp


def check_batches(config, batch_ways: int) -> None:
    r, s = config.rl, config.sft
    if r.accumulation < 1 or r.minibatch_size % r.accumulation:
        raise PreflightError(f"rl.minibatch_size={r.minibatch_size} does not split into "
                             f"rl.accumulation={r.accumulation} equal micro-batches")
    micro = r.minibatch_size // r.accumulation
    if micro % batch_ways:
        raise PreflightError(
            f"rl.minibatch_size={r.minibatch_size} / rl.accumulation={r.accumulation} = {micro} "
            f"samples per micro-batch do not divide over mesh data x fsdp = {batch_ways} devices")
    if s.steps > 0 and s.batch_size % batch_ways:
        raise PreflightError(f"sft.batch_size={s.batch_size} does not divide over mesh "
                             f"data x fsdp = {batch_ways} devices")


def check_demo_file(path: str) -> None:
    """sft.demo_path must be an ArrayRecord file whose records decode as decisions."""
    from grow_jax.data.demos import decode_record

    if not os.path.isfile(path):
        raise PreflightError(f"sft.demo_path: demonstration file not found: {path}")
    try:
        import grain

        src = grain.sources.ArrayRecordDataSource([path])
        if len(src) == 0:
            raise ValueError("it holds no records")
        rec = decode_record(src[0])
        frame = rec["frame"]
        if frame.ndim != 3 or frame.shape[-1] != 3 or not isinstance(rec["instruction"], str):
            raise ValueError(f"record 0 has a frame of shape {frame.shape}, expected HxWx3")
        rec["action"]  # noqa: B018 - must exist
    except Exception as e:  # noqa: BLE001 - any failure means the wrong format
        why = " ".join(str(e).split())[:160] or type(e).__name__
        raise PreflightError(
            f"sft.demo_path: {path} is not a grow_jax demonstration file (an ArrayRecord of "
            f"decision records written by grow_jax.data.demos.write_demos): {why}") from None


def check_weights(config, workdir: str | None, mode: str) -> None:
    """model.require_weights: a weight source must exist before anything is built (the
    ConfigError of `builders.start_weights`, raised here before the mesh is checked)."""
    if not config.model.require_weights or mode not in ("train", "sft", "eval"):
        return
    from grow_jax.train.builders import start_weights

    ckpts = os.path.join(workdir, "checkpoints") if workdir else ""
    has = os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))
    start_weights(config, has, resume=mode != "sft")


def check(config, mode: str, workdir: str | None = None) -> None:
    """All checks that apply to `mode` (train and sft; other modes check their own inputs)."""
    check_weights(config, workdir, mode)
    if mode not in ("train", "sft"):
        return
    import jax

    check_batches(config, check_mesh(config, jax.device_count()))
    if config.sft.demo_path:
        check_demo_file(config.sft.demo_path)
