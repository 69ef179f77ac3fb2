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


def load_tokenizer(config):
    from grow_jax.agent.tokenizer import load_tokenizer as load

    path = config.model.tokenizer_dir or config.model.hf_dir
    return load(path)


def model_config(config, tokenizer) -> Qwen2VLConfig:
    """The Qwen2VLConfig of this run: from hf_dir's config.json, or the preset + overrides
    with vocabulary and special-token ids taken from the tokenizer."""
    m = config.model
    if m.hf_dir:
        with open(os.path.join(m.hf_dir, "config.json")) as f:
            return Qwen2VLConfig.from_hf(json.load(f)).replace(
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


def build_model(mcfg: Qwen2VLConfig, mesh, seed: int):
    """A randomly initialised model, its params placed on the mesh by the logical rules."""
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    model = Qwen2VL(mcfg, rngs=nnx.Rngs(seed))
    return sharding.shard_model(model, mesh)


def param_count(model) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
