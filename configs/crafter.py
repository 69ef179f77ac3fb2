"""Crafter at laptop scale: the tiny model of configs/tiny_cpu.py on a set of Crafter
achievements given as language instructions, SFT from the scripted expert
(grow_jax/envs/crafter_expert.py), then GROW; evaluated on the same achievements in
held-out worlds (world seeds from eval.seed_offset on; training worlds lie below it).

Why these tasks: of the 22 achievements, the expert solves these within a few to ~15
decisions from the spawn point (tests/envs/test_crafter_expert.py), so a 24-decision cap
leaves room for a sampling policy to err and still succeed: that mix of successes and
failures in a same-world group is GROW's signal. collect_wood and eat_cow need a walk to
a visible tree or cow and `do`; place_table needs two wood first; collect_sapling is
`do` on grass (10% a time). Left out: anything behind a wood pickaxe (collect_stone and
later need 25+ decisions and a table the tiny agent cannot see once it walks away),
wake_up (sleeping needs 30 decisions of waiting first) and defeat_*/eat_plant (rare or
300+ steps). Settings, and what they change from tiny_cpu:
- 64x64 Crafter frames resized to 32x32 (`env.image_size`): 4 image tokens, the same
  cost per decision as the BabyAI job; the 9x7 local view still shows trees and water.
- a longer SFT (more expert episodes and steps) than BabyAI's: six instructions share
  one policy, and the expert's walks are longer;
- smaller rollouts (8 groups of 8, 100 eval episodes per task) and fewer iterations: a
  Crafter step and a new world cost more than a BabyAI one.
"""

import importlib.util
import os


def _tiny_cpu():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_cpu.py")
    spec = importlib.util.spec_from_file_location("tiny_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


TASKS = ("collect_wood", "collect_sapling", "place_plant", "collect_drink", "eat_cow",
         "place_table")


def get_config():
    c = _tiny_cpu()
    e = c.env
    e.suite = "crafter"
    e.tasks = TASKS
    e.eval_tasks = None  # the same achievements, on held-out world seeds
    e.max_steps = 24
    e.image_size = 32
    e.kwargs = {}
    r = c.rl
    r.iterations = 30
    r.group_size = 8
    r.groups_per_iter = 12  # two worlds per achievement per iteration
    r.minibatch_size = 256
    r.warmup_steps = 5
    s = c.sft
    s.demo_episodes = 60
    s.steps = 300
    v = c.eval
    v.episodes = 100
    v.num_envs = 200
    v.every = 10
    return c
