"""Builds the run's pieces from a config: mesh, tokenizer, model, tasks, env pools, agent."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx

from grow_jax import sharding
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig


def make_mesh(config):
    """The ("data", "fsdp", "tensor") mesh; mesh.data = -1 takes the remaining devices."""
    m = config.mesh
    n = jax.device_count()
    fixed = m.fsdp * m.tensor
    data = m.data if m.data != -1 else n // fixed
    if data * fixed != n:
        raise ValueError(f"mesh data={data} x fsdp={m.fsdp} x tensor={m.tensor} does not use "
                         f"the {n} devices of this run")
    return sharding.make_mesh(data=data, fsdp=m.fsdp, tensor=m.tensor)


def batch_shards(config, mesh) -> int:
    """Row blocks per batch: the mesh's device count with mesh.fixed_order_reduce (each
    device's rows collated as a batch of their own, train/fixed_order.py), else 1. Raises
    ConfigError for settings the fixed-order step cannot run."""
    from grow_jax.config_utils import ConfigError

    if not config.mesh.fixed_order_reduce:
        return 1
    n = mesh.size
    checks = [
        (mesh.shape["tensor"] == 1, f"needs mesh.tensor = 1, got {mesh.shape['tensor']}"),
        (not config.rl.pack, "does not take packed rows: set rl.pack=False"),
        (config.rl.minibatch_size % n == 0,
         f"needs rl.minibatch_size divisible by the mesh's {n} devices, got "
         f"{config.rl.minibatch_size}"),
        (config.sft.steps == 0 or config.sft.batch_size % n == 0,
         f"needs sft.batch_size divisible by the mesh's {n} devices, got "
         f"{config.sft.batch_size}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"config error: mesh.fixed_order_reduce {msg}")
    return n


HF_ASSETS_DIR = "hf_assets"  # as grow_jax.main.HF_ASSETS_DIR: files import_hf keeps


def imported_workdir(config, workdir: str, start: str) -> str | None:
    """The workdir of an `import_hf` whose checkpoint starts this run (WORKDIR itself or
    rl.init_checkpoint, when it holds hf_assets/ and hf_dir is unset), else None: its
    checkpoint's architecture and its tokenizer then define the model."""
    src = {"checkpoint": workdir, "init_checkpoint": config.rl.init_checkpoint}.get(start)
    if config.model.hf_dir or not src or not os.path.isdir(os.path.join(src, HF_ASSETS_DIR)):
        return None
    return src


def load_tokenizer(config, imported: str | None = None):
    """model.tokenizer_dir > model.hf_dir > an imported workdir's hf_assets > the shipped one."""
    from grow_jax.agent.tokenizer import load_tokenizer as load

    path = config.model.tokenizer_dir or config.model.hf_dir
    if path is None and imported is not None:
        assets = os.path.join(imported, HF_ASSETS_DIR)
        path = assets if os.path.isfile(os.path.join(assets, "tokenizer.json")) else None
    return load(path)


def model_config(config, tokenizer, imported: str | None = None) -> Qwen2VLConfig:
    """The Qwen2VLConfig of this run: from hf_dir's config.json, an imported workdir's
    checkpoint metadata, or the preset + overrides with vocabulary and special-token ids
    taken from the tokenizer."""
    m = config.model
    if m.hf_dir:
        with open(os.path.join(m.hf_dir, "config.json")) as f:
            return Qwen2VLConfig.from_hf(json.load(f)).replace(
                dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
    if imported is not None:
        from grow_jax.train.checkpoint import Checkpointer

        ckpt = Checkpointer(os.path.join(imported, "checkpoints"), async_save=False)
        try:
            extra = ckpt.read_extra() or {}
        finally:
            ckpt.close()
        if "model_config" in extra:
            return Qwen2VLConfig.from_hf(dict(extra["model_config"])).replace(
                dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
    from grow_jax.agent.tokenizer import special_token_ids

    if m.preset == "qwen2_vl_7b":
        return Qwen2VLConfig.qwen2_vl_7b().replace(dtype=m.dtype, param_dtype=m.param_dtype,
                                                   remat=m.remat)
    if m.preset != "tiny":
        raise ValueError(f"config error: model.preset must be 'tiny' or 'qwen2_vl_7b', "
                         f"got {m.preset!r}")
    ids = special_token_ids(tokenizer)
    vocab = -(-len(tokenizer) // 64) * 64
    overrides = dict(vocab_size=vocab, image_token_id=ids.image_pad,
                     video_token_id=ids.video_pad, vision_start_token_id=ids.vision_start,
                     vision_end_token_id=ids.vision_end, dtype=m.dtype,
                     param_dtype=m.param_dtype, remat=m.remat)
    overrides.update(dict(m.preset_overrides))
    return Qwen2VLConfig.tiny(**overrides)


def build_model(mcfg: Qwen2VLConfig, mesh, seed: int, hf_dir: str | None = None):
    """The model on the mesh: hf_dir's weights loaded straight onto it, else a random init."""
    if hf_dir:
        from grow_jax.models import hf_io

        return hf_io.load_pretrained(hf_dir, mesh=mesh, dtype=mcfg.dtype,
                                     param_dtype=mcfg.param_dtype)
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    model = Qwen2VL(mcfg, rngs=nnx.Rngs(seed))
    return sharding.shard_model(model, mesh)


# Where a run's starting params come from, first match wins (docs: BUILD.md "Weights").
WEIGHT_SOURCES = ("checkpoint", "init_checkpoint", "hf_dir", "init")


def start_weights(config, has_checkpoint: bool, resume: bool = True) -> str:
    """The run's weight source: "checkpoint" (WORKDIR's latest: resume, or an sft/import_hf
    checkpoint), "init_checkpoint" (rl.init_checkpoint's workdir), "hf_dir" (model.hf_dir's
    safetensors) or "init" (random init, followed by the SFT warm start when sft.steps > 0).
    resume=False (--mode=sft) skips the first two. Raises ConfigError when
    model.require_weights is set and the answer would be "init"."""
    from grow_jax.config_utils import ConfigError

    if resume and has_checkpoint:
        return "checkpoint"
    if resume and config.rl.init_checkpoint:
        return "init_checkpoint"
    if config.model.hf_dir:
        return "hf_dir"
    if config.model.require_weights:
        raise ConfigError("config error: this config needs starting weights: set "
                          "--config.model.hf_dir=HF_FOLDER or --config.rl.init_checkpoint="
                          "WORKDIR, or use a workdir that holds a checkpoint")
    return "init"


def param_count(model) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
