"""The README's main job: SFT warm start on BabyAI bot demonstrations, then GROW RL,
on a laptop CPU in minutes (the paper's recipe at laptop scale).

Choices (measured with scripts/run_main_job.py; README has the figures):
- BabyAI GoTo levels with a 16-decision cap: the bot needs ~5 decisions, so *which action*
  is the error RL can fix, not long-horizon exploration.
- 28x28 frames (tile 4, padded to 32x32), patch 8 -> 16 patches merged into 4 image
  tokens; a compact prompt (~16 tokens) and one action word + <|im_end|> per decision.
  (Patch 4 / 16 image tokens started SFT higher, 35% vs 21%, but cost ~3x per sample.)
- Groups over 4 world seeds (`rl.seeds_per_group=4`: G=16 episodes of one instruction,
  4 per layout). With same-seed groups a sharpening policy plays one trajectory G times,
  nearly every group turns uniform and GROW's success-vs-failure contrast is gone; one
  seed of the same-seed table (README at commit 23399ca) collapsed that way. Over 4
  layouts a confident policy still meets successes and failures in one group: in the
  README's table every seed ends at its best evaluation.
- An entropy bonus (0.01) over the action grammar's words. Without it a seed's policy went
  near-deterministic (action entropy ~0.05 nats) at ~75% success: same-seed groups then
  play one trajectory, nearly every group is uniform, the few samples left make noisy
  full-size Adam steps, and one of them sent the policy to a bad deterministic one that no
  group could correct. (Over the full vocabulary, before the grammar, a bonus spread mass
  onto non-action tokens instead.)
- An entropy floor (`algo.entropy_floor=0.3` nats, weight 0.05): a hinge on decisions whose
  entropy fell below it. Without it, on a second machine (Intel Xeon) one seed of five went
  near-deterministic, a single large update then moved it to a worse policy and it stalled
  there (docs/main_job_xeon.md); with it every seed met the bars on that machine (README).
- A deliberately short SFT (few demonstrations, few steps) so the start still explores: a
  same-seed group then holds successes and failures, which is GROW's learning signal.
- Stability over seeds (docs/stability.md): an action grammar (one action word, then
  <|im_end|>, in the sampler and the loss) so no update can break the turn format;
  all-success groups get no advantage
  (`algo.grow_uniform_groups="skip"`: with the paper's std normalization their small
  discount and length differences become full-size pushes), an epoch stops the
  iteration's updates once its approx_kl exceeds `rl.target_kl` (a minibatch's, 1.5x),
  the learning rate warms up over the first iteration (fresh Adam moments make the first
  steps full-size) and decays (cosine) so late updates on a sharp policy are small.
- lr 1e-3 with the guard below. Before the guard, lr was 5e-4: at 1e-3 the first update of
  an iteration, where every ratio is 1 and clipping cannot act yet, sometimes moved the
  policy to approx_kl 0.3-0.5 on its own (a few rare sampled actions with large advantages
  steer a full-size Adam step), and the per-minibatch KL check only stops the updates after
  such a step. The guard halves or drops exactly that step; with it, 5e-4 left two seeds of
  five learning slowly on an AMD EPYC without AVX-512 (+16.4 and +28.6 points in 60
  iterations, docs/main_job_zen3.md), and 1e-3 made them +41.6 and +61.0 (README's table;
  docs/stability.md). 60 iterations (30 left every seed still rising).
- A look-ahead KL guard (`rl.kl_backtracks=4`): each update is measured on its own
  minibatch before it is applied and halved (or dropped) while it would lift approx_kl above
  1.5 x target_kl. Without it, on an AMD EPYC one seed of five (seed 4) took one update to
  approx_kl 0.29 at iteration 40 and fell from 66% to 34% training success for good
  (docs/main_job_m2.md); the KL stop above only halts the updates after such a step.
"""

from grow_jax.config_utils import base_config


def get_config():
    c = base_config()
    c.seed = 0
    m = c.model
    m.preset = "tiny"
    m.preset_overrides = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vision_depth=1, embed_dim=32, vision_num_heads=2,
        mlp_ratio=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    e = c.env
    e.suite = "babyai"
    e.tasks = ("BabyAI-GoToRedBallNoDists-v0",)
    e.max_steps = 16
    e.kwargs = dict(tile_size=4)
    a = c.agent
    a.history = 0
    a.compact_prompt = True
    a.max_new_tokens = 2  # action word + <|im_end|>
    a.temperature = 1.0
    g = c.algo
    g.name = "grow"
    g.gamma = 0.995
    g.clip_low = 0.2
    g.clip_high = 0.2
    g.entropy_coef = 0.01  # over the grammar's 7 words: keeps same-seed groups mixed
    g.entropy_floor = 0.3  # nats: a decision sharper than this is pushed back (hinge) ...
    g.entropy_floor_coef = 0.05  # ... with this weight (0.2 collapsed the failing seed too)
    g.drop_zero_advantage = True
    g.action_tokens_only = True  # grammar: word, then stop (else failures break the format)
    g.grow_uniform_groups = "skip"  # all-success groups: no full-size push on discount noise
    r = c.rl
    r.iterations = 60
    r.group_size = 16
    r.seeds_per_group = 4  # 4 layouts x 4 episodes: groups stay mixed as the policy sharpens
    r.groups_per_iter = 16
    r.epochs = 4  # 2 epochs: 37% after 20 iterations; 4 epochs: 57% (300 eval episodes)
    r.minibatch_size = 512
    r.lr = 1e-3  # 5e-4 before the guard (first-of-iteration spikes), slow with it
    r.warmup_steps = 20  # ~one iteration's updates: fresh Adam made seed 0's first one spike
    r.grad_clip = 1.0
    r.target_kl = 0.03  # skip an iteration's remaining epochs after an approx_kl spike
    r.kl_backtracks = 4  # and halve (<= 4x) or drop the step that would cause one
    r.schedule = "cosine"  # smaller steps late, when the policy is sharp and fragile
    r.final_lr_ratio = 0.1
    s = c.sft
    s.demo_episodes = 5
    s.steps = 60
    s.batch_size = 32
    s.lr = 3e-3
    s.warmup_steps = 0
    v = c.eval
    v.episodes = 500
    v.num_envs = 256
    v.every = 20
    v.videos = 2
    v.greedy = False
    c.checkpoint.every = 10
    return c
