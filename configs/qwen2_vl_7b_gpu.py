"""The paper's setting on one GPU node: GROW on a Qwen2-VL-7B agent in Minecraft, 8x H100
or H200 (80 / 141 GB, NVLink).

Same recipe as configs/qwen2_vl_7b_tpu.py; only the mesh and batch layout differ:
- fsdp 8: parameters, gradients and AdamW moments sharded over the node's 8 GPUs (ZeRO-3);
  NVLink makes the per-layer all-gathers cheap, so no tensor parallelism is needed.
- bf16 compute, f32 master weights; decoder layers recomputed in the backward pass
  (`model.remat`) and the 256-sample minibatch accumulated over 8 micro-batches, which
  keeps activations within an H100's memory (`python -m grow_jax.plan` gives the figures).
- Multi-node (launch/gpu_slurm.sh): `mesh.data=-1` adds data parallelism across nodes.
"""

import importlib.util
import os


def _tpu_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qwen2_vl_7b_tpu.py")
    spec = importlib.util.spec_from_file_location("qwen2_vl_7b_tpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _tpu_config()
    c.mesh.data = -1
    c.mesh.fsdp = 8
    c.mesh.tensor = 1
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = True
    c.rl.minibatch_size = 256
    c.rl.accumulation = 8
    return c
