"""Default run configuration: every key a grow_jax run may set, with its type and default.

Every run config is checked against this one (`grow_jax.config_utils`): a key that is not
here, or a value of another type, is a one-line error. Other config files start from it:

    from grow_jax.config_utils import base_config

    def get_config():
        config = base_config()
        config.env.suite = "crafter"
        return config

Conventions: `placeholder(T)` marks an optional field (None or a T); an empty dict marks a
free-form section whose keys are not checked; a float field also accepts an int;
`FieldReference(..., field_type=object)` marks a field that is one string or a tuple of
strings (a task selection; the names are checked by `grow_jax.envs.base.select_tasks`).
"""

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # master seed: model init, env seeds, sampling, data order

    c.model = m = ml_collections.ConfigDict()
    m.preset = "tiny"  # Qwen2VLConfig preset used when hf_dir is unset: "tiny" | "qwen2_vl_7b"
    m.preset_overrides = {}  # free-form Qwen2VLConfig.tiny(**overrides) fields, e.g. hidden_size
    m.hf_dir = placeholder(str)  # local HF Qwen2-VL folder: its config, tokenizer and weights
    # (starting weights, first match: WORKDIR checkpoint > rl.init_checkpoint > hf_dir > init)
    m.tokenizer_dir = placeholder(str)  # tokenizer folder; None: hf_dir's, else the shipped one
    m.dtype = "float32"  # compute dtype: float32 | bfloat16 (bf16 on TPU/GPU; CPU benchmarks: f32)
    m.param_dtype = "float32"  # parameter storage dtype (optimizer master weights)
    m.remat = False  # recompute each decoder layer in the backward pass (less activation memory)
    m.require_weights = False  # refuse a random init: need a checkpoint, init_checkpoint or hf_dir

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel axis size; -1 takes all devices left over by the others
    c.mesh.fsdp = 1  # parameter-sharding (ZeRO-3 style) axis size
    c.mesh.tensor = 1  # tensor-parallel axis size (heads / mlp / vocab)
    # sum gradients over the devices in a fixed order, so any process layout of the same
    # mesh trains bit-identically (the state replicated, one gradient copy per device on
    # each: small models and exactness checks; needs mesh.tensor=1, no rl.pack; BUILD.md)
    c.mesh.fixed_order_reduce = False

    c.env = e = ml_collections.ConfigDict()
    e.suite = "babyai"  # task suite: babyai | crafter | minecraft
    # tasks trained on: a tuple of task ids / family names, or one string: an id, a family
    # (BabyAI level group, Crafter category, Minecraft embodied/gui/combat/interact) or "all"
    e.tasks = FieldReference(("BabyAI-GoToRedBallNoDists-v0",), field_type=object)
    e.eval_tasks = FieldReference(None, field_type=object)  # same form; None: the training tasks
    e.max_steps = 16  # episode cap in decisions (one decision = one model call)
    e.actions_per_decision = 1  # low-level actions per model call (Minecraft only: e.g. 4)
    # frames fed to the vision tower: None = the suite's native frames; an int = resized
    # (bicubic, aspect kept) so the longer side is that many pixels. Either way frames are
    # then padded to multiples of patch_size * spatial_merge_size.
    e.image_size = placeholder(int)
    e.kwargs = {}  # free-form suite-specific constructor arguments
    e.pool_mode = "sync"  # env pool: "sync" (in-process) | "async" (worker processes) | "ray"
    e.fault_policy = "drop"  # crashed/hung env: restart, "drop" | "fail" episode; "raise": stop
    e.max_faults_in_a_row = 3  # stop after N faults in a row of one env; 0: never stop
    e.timeout_s = 300.0  # longest wait for one env reset/step (async pool) before a restart
    e.ray_address = placeholder(str)  # pool_mode=ray: cluster; None: RAY_ADDRESS, else local
    e.ray_actors = placeholder(int)  # pool_mode=ray: actors sharing the envs; None: cluster CPUs
    e.ray_actor_cpus = 0.5  # pool_mode=ray: CPUs each actor reserves (Minecraft: a JVM wants 2+)
    e.pipeline = False  # async/ray pools: step half the envs while sampling the other half

    c.agent = a = ml_collections.ConfigDict()
    a.history = 0  # previous decisions shown in the prompt (GROW's released agent: 0)
    a.compact_prompt = True  # short instruction-only prompt instead of the full chat preamble
    a.max_prompt_tokens = 512  # longest prompt (tokens, images included); longer: an error
    a.max_new_tokens = 8  # action tokens sampled per decision
    a.temperature = 1.0  # rollout sampling temperature
    a.top_k = 0  # top-k filter at sampling time; 0 disables
    a.top_p = 1.0  # nucleus filter at sampling time; 1.0 disables
    a.decode_dtype = placeholder(str)  # sampler weights/activations/KV cache: float32 | bfloat16;
    # None: model.dtype. One that differs from the learner's needs algo.recompute_old_logprobs

    c.algo = g = ml_collections.ConfigDict()
    g.name = "grow"  # advantage estimator: grow | grpo_traj | tgrpo | gigpo | ppo | ppo_cot
    g.gamma = 0.995  # grow only: backward discount of the terminal reward per decision
    g.return_type = "outcome"  # grow: "outcome" (terminal reward) | "discounted" (dense rewards)
    g.std_normalize = True  # grow/grpo_traj/tgrpo: divide group-normalized advantages by std
    g.adv_eps = 1e-6  # epsilon added to the std in advantage normalization (all but ppo)
    g.clip_low = 0.2  # lower clip of the policy ratio: 1 - clip_low
    g.clip_high = 0.2  # upper clip of the policy ratio: 1 + clip_high
    g.kl_coef = 0.0  # k3 KL penalty to the frozen reference model; 0 drops the reference
    g.entropy_coef = 0.0  # entropy bonus coefficient (over every trained token)
    g.entropy_floor = 0.0  # nats: per-token entropy below it is penalized (entropy_floor_coef)
    g.entropy_floor_coef = 0.0  # weight of the hinge max(0, floor - entropy); 0 disables
    g.aggregation = "token_mean"  # loss aggregation: token_mean | sample_mean
    g.format_penalty = 0.1  # reward subtracted when action text does not parse (mapped to no-op)
    g.drop_zero_advantage = True  # skip samples whose advantage is exactly 0
    g.recompute_old_logprobs = False  # re-score behaviour logprobs in the learner before the
    # epochs (one forward per minibatch): needed when agent.decode_dtype differs from model's
    g.tgrpo_alpha_step = 1.0  # tgrpo: weight of the step-level advantage
    g.tgrpo_alpha_traj = 1.0  # tgrpo: weight of the trajectory-level advantage
    g.gigpo_step_weight = 1.0  # gigpo: weight of the anchor-state step advantage
    g.gae_lambda = 0.95  # ppo: GAE lambda
    g.value_coef = 0.5  # ppo: value-loss coefficient
    g.cot_lambda = 0.5  # ppo_cot: weight of log p(chain of thought)
    g.params = {}  # free-form overrides of algo.name's own parameters (config file), e.g. gigpo:
    # dict(gamma=0.9, mode="mean_std_norm", cross_steps=False); see docs/algorithms.md
    g.care_coef = 0.0  # grow: GRPO-CARE consistency bonus lambda (x return); 0 disables
    g.care_ema_decay = 0.995  # grow + CARE: decay of the EMA reference that scores episodes
    g.care_ema_every = 1  # grow + CARE: iterations between EMA reference updates
    g.grow_uniform_groups = "normalize"  # grow: uniform-return groups: normalize | skip | scale
    g.grow_uniform_weight = 1.0  # grow: factor on uniform-return groups' advantages ("scale")
    g.grow_length_norm = False  # grow: group mean/std weigh episodes equally (1/H_i per decision)
    g.action_tokens_only = False  # action grammar: one action word, then the stop token (masking)
    g.train_stop_token = True  # train the stop token after an action word (False: context only)

    c.rl = r = ml_collections.ConfigDict()
    r.iterations = 240  # RL iterations (rollout + update); the paper runs 240
    r.group_size = 8  # G: episodes per group, all with the same instruction
    r.seeds_per_group = 1  # world seeds per group (G / this episodes each); 1: same-seed groups
    r.groups_per_iter = 8  # groups rolled out per iteration
    r.epochs = 1  # passes over each iteration's samples
    r.minibatch_size = 64  # samples per gradient step (global, across data-parallel devices)
    r.lr = 1e-6  # peak learning rate (AdamW)
    r.warmup_steps = 10  # linear warm-up steps to the peak learning rate
    r.weight_decay = 0.0  # AdamW weight decay
    r.grad_clip = 1.0  # global gradient-norm clip; 0 disables
    r.freeze_vision = False  # keep the vision tower fixed (RL and SFT)
    r.accumulation = 1  # micro-batches per optimizer step (the minibatch split this many ways)
    r.init_checkpoint = placeholder(str)  # workdir (sft / import_hf) whose params start RL
    r.max_skipped_updates = 20  # stop after N updates in a row skipped for NaN/inf; 0: never
    r.target_kl = 0.0  # stop the iteration once an epoch's approx_kl > it (a minibatch's > 1.5x)
    r.kl_backtracks = 0  # with target_kl: halve a step (<= N times) that would pass 1.5x target_kl
    r.schedule = "constant"  # RL learning rate: constant | cosine (to lr * final_lr_ratio)
    r.final_lr_ratio = 0.1  # cosine floor as a fraction of rl.lr
    r.pack = False  # pack several samples per token row (per-sample attention) instead of padding
    r.pack_len = 0  # rl.pack: tokens per packed row; 0: the cheapest for each epoch's samples

    c.sft = s = ml_collections.ConfigDict()
    s.demo_episodes = 64  # expert (bot) episodes recorded as demonstrations
    s.demo_path = placeholder(str)  # recorded demonstration file; None: generate with the bot
    s.steps = 200  # gradient steps
    s.batch_size = 32  # samples per gradient step
    s.lr = 1e-4  # peak learning rate (AdamW)
    s.warmup_steps = 10  # linear warm-up steps
    s.grad_clip = 1.0  # global gradient-norm clip; 0 disables
    s.steps_per_call = 10  # gradient steps fused into one jitted call (fewer host round trips)

    c.eval = v = ml_collections.ConfigDict()
    v.episodes = 100  # evaluation episodes per task (held-out seeds)
    v.num_envs = 32  # environments stepped in parallel during evaluation
    v.seed_offset = 1_000_000  # evaluation env seeds start here, away from training seeds
    v.every = 10  # evaluate every N iterations; 0 only at start and end
    v.videos = 2  # episode videos (GIF) saved per evaluation; 0 disables
    v.greedy = True  # argmax actions at evaluation instead of sampling

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every = 10  # save every N iterations (and at the end)
    k.keep = 3  # newest checkpoints kept on disk
    k.async_save = True  # write checkpoints in the background

    c.logging = lg = ml_collections.ConfigDict()
    lg.every = 1  # write a train metrics row every N iterations (and the last); 0 acts as 1
    lg.tensorboard = True  # also write TensorBoard event files under WORKDIR/tensorboard
    lg.progress = True  # console progress bar

    c.force = False  # train/sft: run in a workdir created by another config (else refused)
    return c
