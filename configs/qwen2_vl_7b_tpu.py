"""The paper's setting: GROW on a Qwen2-VL-7B agent in Minecraft, on a Cloud TPU v5p slice.

Start from a local HF Qwen2-VL-7B checkpoint (an SFT'd agent such as JARVIS-VLA, or
Qwen2-VL-7B-Instruct), e.g.

    python -m grow_jax.main --config=configs/qwen2_vl_7b_tpu.py --workdir=gs://BUCKET/grow7b \
        --config.model.hf_dir=/mnt/ckpt/JARVIS-VLA-Qwen2-VL-7B

Published: Qwen2-VL-7B, SFT cold start, 8 Minecraft training tasks for 240 iterations, gamma
0.995, 4 low-level actions per decision, current frame only. Not published (our defaults):
the exact 8 tasks (one per skill below), group size, learning rate, clip range, KL term.
Mesh: 32 chips (v5p-64) as fsdp 8 x tensor 4; `data=-1` grows data parallelism on bigger
slices.
"""

from grow_jax.config_utils import base_config


def get_config():
    c = base_config()
    c.model.preset = "qwen2_vl_7b"  # Qwen2-VL-7B sizes (what the planner sizes without hf_dir)
    c.model.hf_dir = None  # set with --config.model.hf_dir=/path/to/hf/folder
    c.model.preset = "qwen2_vl_7b"  # the architecture when weights come from a checkpoint
    c.model.require_weights = True  # no hf_dir, init_checkpoint or checkpoint: refuse to start
    c.model.dtype = "bfloat16"  # bf16 compute on TPU
    c.model.param_dtype = "float32"  # f32 master weights (Adam states sharded over fsdp)

    c.mesh.data = -1
    c.mesh.fsdp = 8
    c.mesh.tensor = 4

    c.env.suite = "minecraft"
    c.env.tasks = (  # ids of grow_jax/assets/minecraft_tasks.tsv (tests check they exist)
        "mine_block:oak_log",
        "mine_block:stone",
        "mine_block:iron_ore",
        "craft_item:crafting_table",
        "craft_item:torch",
        "craft_item:furnace",
        "kill_entity:zombie",
        "kill_entity:sheep",
    )
    c.env.eval_tasks = None  # None: the training tasks; the full OpenHA suite has 823 ids
    c.env.max_steps = 300  # decisions (4 ticks each: 60 s of game time)
    c.env.actions_per_decision = 4
    c.env.image_size = 448  # 640x360 frames resized to 448x252 (padded to 448x280: 160 tokens)
    c.env.pool_mode = "async"  # each Minecraft instance in its own worker process

    c.agent.history = 0  # current frame only, as the released agent
    c.agent.compact_prompt = True
    c.agent.max_prompt_tokens = 1024
    c.agent.max_new_tokens = 64  # 4 actions x JARVIS-VLA action tokens
    c.agent.temperature = 1.0

    c.algo.name = "grow"
    c.algo.gamma = 0.995
    c.algo.clip_low = 0.2
    c.algo.clip_high = 0.28
    c.algo.kl_coef = 0.0

    c.rl.iterations = 240
    c.rl.group_size = 8
    c.rl.groups_per_iter = 8
    c.rl.epochs = 1
    c.rl.minibatch_size = 256
    c.rl.accumulation = 8  # 32-sample micro-batches: activations fit a v5p (grow_jax.plan)
    c.rl.lr = 1e-6
    c.rl.warmup_steps = 10
    c.rl.grad_clip = 1.0

    c.sft.steps = 0  # the starting checkpoint is already an SFT'd agent

    c.eval.episodes = 10
    c.eval.num_envs = 64
    c.eval.every = 20
    c.eval.videos = 4

    c.checkpoint.every = 10
    c.checkpoint.keep = 3
    return c
