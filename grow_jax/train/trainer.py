"""The training loops behind `--mode=train` (GROW / baselines) and `--mode=sft`.

train: [SFT warm start if the workdir is new] -> evaluate the start -> iterations of
rollout -> advantages -> K epochs of fused updates -> metrics -> periodic eval and
checkpoints -> final eval, eval.json/eval.md and learning_curve.png.

Exact resume: a checkpoint holds the TrainState (params, optimizer, step, RNG) and the
iteration; env seeds and sampling keys derive from (config.seed, iteration), so a run
killed at any point and restarted from its last checkpoint replays the same iterations.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import numpy as np
from flax import nnx

from grow_jax import distributed
from grow_jax.config_utils import ConfigError, config_to_json
from grow_jax.data.pipeline import epoch_batches, stack_micro_batches
from grow_jax.data.samples import BatchShape, collate, make_sample
from grow_jax.eval.evaluate import evaluate, resume_kwargs, write_report
from grow_jax.rollout.loop import RolloutStats, image_token_count, run_episodes
from grow_jax.sampling.generate import BATCH_BUCKET, Sampler, SamplingParams
from grow_jax.train import builders, diagnostics, preemption
from grow_jax.train.action_mask import action_grammar, drop_stop_targets
from grow_jax.train.care import EmaReference
from grow_jax.train.checkpoint import Checkpointer
from grow_jax.train.faults import SkipGuard
from grow_jax.train.metrics import MetricsWriter, plot_learning_curve, set_aside_metrics
from grow_jax.train.optim import make_optimizer, rl_total_updates
from grow_jax.train.reference import LogprobPass, Reference, recompute_old_logprobs
from grow_jax.train.rl import VALUE_ESTIMATORS, build_samples, validate
from grow_jax.train.step import Learner, LossConfig, TrainState
from grow_jax.train.value_head import ValuePass

TRAIN_KEYS = ("success_rate", "mean_return", "loss", "kl", "clip_frac", "grad_norm",
              "samples_per_s", "iter_s", "approx_kl", "epochs_done", "action_entropy")
EVAL_KEYS = ("eval_success_rate", "eval_episodes")


class Run:
    """Everything built once per process: mesh, tokenizer, model, agent, env pools."""

    def __init__(self, config, workdir: str, resume: bool = True):
        """resume=False (--mode=sft): the workdir's checkpoint and rl.init_checkpoint are not
        starting points; `self.start` is the weight source (builders.start_weights)."""
        from grow_jax.agent.adapter import make_agent

        self.config, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)
        self.ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                                 max_to_keep=config.checkpoint.keep,
                                 async_save=config.checkpoint.async_save)
        self.start = builders.start_weights(config, self.ckpt.latest_step() is not None, resume)
        self.mesh = builders.make_mesh(config)
        self.shards = builders.batch_shards(config, self.mesh)  # mesh.fixed_order_reduce
        imported = builders.imported_workdir(config, workdir, self.start)
        self.tokenizer = builders.load_tokenizer(config, imported)
        self.mcfg = builders.model_config(config, self.tokenizer, imported)
        self.model = builders.build_model(self.mcfg, self.mesh, config.seed,
                                          config.model.hf_dir if self.start == "hf_dir" else None)
        self.agent = make_agent(config, self.tokenizer)
        self.pad_id = self.agent.pad_id
        m = self.mcfg  # vision placeholders: a sampled one would be read as an image slot
        self.suppressed = (m.image_token_id, m.video_token_id, m.vision_start_token_id,
                           m.vision_end_token_id)
        self.grammar = None  # invalid-action masking (train/action_mask.py)
        if config.algo.action_tokens_only:
            self.grammar = action_grammar(self.agent)
        self.metrics = MetricsWriter(workdir, tensorboard=config.logging.tensorboard,
                                     console=config.logging.progress,
                                     process_index=jax.process_index())
        self._pools = {}
        self.stop = preemption.GracefulStop()  # SIGTERM/SIGINT: checkpoint, then exit 0

    # -------------------------------------------------------------- pieces
    def tasks(self, eval_: bool = False):
        from grow_jax.envs import make_tasks

        e = self.config.env
        held_out = eval_ and e.eval_tasks is not None
        key, ids = ("env.eval_tasks", e.eval_tasks) if held_out else ("env.tasks", e.tasks)
        try:
            return make_tasks(e.suite, ids=ids, max_steps=e.max_steps)
        except ValueError as err:
            raise ConfigError(f"config error: '{key}': {err}") from None

    def env_kwargs(self) -> dict:
        """make_env options of this run (`grow_jax.envs.pool.env_kwargs_from_config`)."""
        from grow_jax.envs.pool import env_kwargs_from_config

        return env_kwargs_from_config(self.config.env)

    def pool(self, name: str, tasks_per_env):
        from grow_jax.envs.pool import pool_from_config

        if name not in self._pools:
            self._pools[name] = pool_from_config(tasks_per_env, self.config.env)
        return self._pools[name]

    def sampler(self, greedy: bool = False) -> Sampler:
        a = self.config.agent
        sp = SamplingParams(max_new_tokens=a.max_new_tokens,
                            temperature=0.0 if greedy else a.temperature, top_k=a.top_k,
                            top_p=a.top_p, stop_token_ids=tuple(self.agent.stop_ids),
                            suppress_token_ids=self.suppressed, grammar=self.grammar)
        return Sampler(self.model, sp, mesh=distributed.local_mesh(self.mesh),  # own devices
                       batch_bucket=distributed.local_rows(BATCH_BUCKET, self.mesh),
                       pad_id=self.pad_id, dtype=a.decode_dtype)

    @functools.cached_property
    def eval_sampler(self) -> Sampler:
        return self.sampler(greedy=self.config.eval.greedy)

    def learner(self, kind: str, opt_cfg) -> Learner:
        g = self.config.algo
        value = kind == "policy" and g.name in VALUE_ESTIMATORS  # PPO: a value head
        cfg = LossConfig(kind=kind, clip_low=g.clip_low, clip_high=g.clip_high,
                         kl_coef=g.kl_coef, entropy_coef=g.entropy_coef,
                         entropy_floor=g.entropy_floor, entropy_floor_coef=g.entropy_floor_coef,
                         aggregation=g.aggregation, suppress_token_ids=self.suppressed,
                         grammar=self.grammar, kl_stop=1.5 * self.config.rl.target_kl,
                         kl_backtracks=self.config.rl.kl_backtracks if kind == "policy" else 0,
                         temperature=self.config.agent.temperature, top_k=self.config.agent.top_k,
                         top_p=self.config.agent.top_p, value_coef=g.value_coef if value else 0.0)
        params = nnx.state(self.model, nnx.Param)
        value_tx = make_optimizer(opt_cfg, {"w": 0, "b": 0}) if value else None
        return Learner(self.model, make_optimizer(opt_cfg, params), cfg, self.mesh,
                       value_tx=value_tx, fixed_order=self.shards > 1)

    # --------------------------------------------------------- checkpoints
    def save(self, iteration: int, state: TrainState, phase: str, env_steps: int = 0,
             force: bool = False):
        pure = nnx.to_pure_dict(state.params)
        rest = {str(i): x for i, x in enumerate(jax.tree.leaves(
            (state.opt_state, state.step, state.rng, state.value, state.value_opt_state)))}
        extra = dict(iteration=iteration, phase=phase, env_steps=env_steps,
                     model_config=self.mcfg.to_hf(),
                     config=json.loads(config_to_json(self.config)))
        self.ckpt.save(iteration, {"params": pure, "train_state": rest}, extra_json=extra,
                       force=force)

    def restore(self, state: TrainState, step: int | None = None):
        """(state, extra) restored onto `state`'s shardings; opt state only if phases match."""
        pure = nnx.to_pure_dict(state.params)
        leaves, treedef = jax.tree.flatten((state.opt_state, state.step, state.rng, state.value,
                                            state.value_opt_state))
        out = self.ckpt.restore({"params": pure,
                                 "train_state": {str(i): x for i, x in enumerate(leaves)}},
                                step)
        params = state.params
        nnx.replace_by_pure_dict(params, out["params"])
        opt, step_, rng, value, value_opt = jax.tree.unflatten(
            treedef, [out["train_state"][str(i)] for i in range(len(leaves))])
        return TrainState(params, opt, step_, rng, value, value_opt), out.get("extra", {})

    def restore_params(self, state: TrainState, directory: str | None = None,
                       step: int | None = None):
        """Params only (any phase: sft, import_hf, rl), from this or another workdir."""
        ckpt = self.ckpt
        if directory is not None:
            ckpt = Checkpointer(os.path.join(directory, "checkpoints"), async_save=False)
        try:
            pure = ckpt.restore({"params": nnx.to_pure_dict(state.params)}, step)["params"]
        finally:
            if ckpt is not self.ckpt:
                ckpt.close()
        params = state.params
        nnx.replace_by_pure_dict(params, pure)
        return params

    def close(self):
        self.ckpt.close()
        self.metrics.close()
        for p in self._pools.values():
            p.close()


# ------------------------------------------------------------------ SFT
def sft_config_view(config):
    """The optimizer settings of the SFT phase (shape expected by make_optimizer)."""
    s = config.sft
    return _Opt(lr=s.lr, warmup_steps=s.warmup_steps, total_steps=s.steps,
                grad_clip=s.grad_clip, schedule="constant",
                freeze_vision=config.rl.freeze_vision)


def rl_config_view(config):
    r = config.rl
    opt = _Opt(lr=r.lr, warmup_steps=r.warmup_steps, total_steps=rl_total_updates(config),
               grad_clip=r.grad_clip, schedule=r.schedule, weight_decay=r.weight_decay,
               freeze_vision=r.freeze_vision)
    opt.final_lr_ratio = r.final_lr_ratio
    return opt


class _Opt:
    """The optimizer settings `make_optimizer` reads, for one phase."""

    def __init__(self, lr, warmup_steps, total_steps, grad_clip, schedule, weight_decay=0.0,
                 freeze_vision=False):
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, total_steps
        self.grad_clip, self.schedule, self.weight_decay = grad_clip, schedule, weight_decay
        self.final_lr_ratio, self.b1, self.b2, self.eps = 0.1, 0.9, 0.999, 1e-8
        self.freeze_vision = freeze_vision


def demo_path(run: Run) -> str:
    from grow_jax.data import demos

    s = run.config.sft
    if s.demo_path:
        return s.demo_path
    path = os.path.join(run.workdir, "demos", "bot_demos.array_record")
    if not os.path.exists(path) and distributed.is_primary():  # the others wait below
        e = run.config.env
        recs = demos.bot_episodes(run.tasks(), s.demo_episodes, run.config.seed + 10_000,
                                  run.env_kwargs(), e.max_steps)
        n = demos.write_demos(path, recs)
        print(f"[sft] wrote {n} expert decisions from {s.demo_episodes} bot episodes to {path}",
              flush=True)
    distributed.barrier("sft_demos")
    return path


def run_sft_phase(run: Run) -> TrainState:
    """Supervised fine-tuning on expert decisions; returns the trained state."""
    from grow_jax.data import demos

    c = run.config
    s = c.sft
    learner = run.learner("sft", sft_config_view(c))
    state = learner.init_state(seed=c.seed)
    n_img = None
    agent, mcfg = run.agent, run.mcfg

    def to_sample(rec):
        nonlocal n_img
        if n_img is None:
            n_img = image_token_count(rec["frame"].shape, mcfg)
        prompt = agent.prompt_ids(rec["instruction"], (), n_img)
        target = np.asarray(agent.encode(rec["action"]), np.int32)[:c.agent.max_new_tokens]
        ids = np.concatenate([prompt, target])
        k = len(target)
        return make_sample(ids, [rec["frame"]], len(prompt) - 1 + np.arange(k), np.zeros(k),
                           np.zeros(k), mcfg)

    ds = demos.demo_dataset(demo_path(run)).map(to_sample)
    samples = list(ds)
    shape = BatchShape.fit(samples, s.batch_size, shards=run.shards)
    import grain

    batches = (grain.MapDataset.source(samples).shuffle(seed=c.seed).repeat(None)
               .batch(s.batch_size, drop_remainder=True,
                      batch_fn=lambda xs: collate(xs, shape, mcfg, run.pad_id)))
    per_call = max(1, min(s.steps_per_call, s.steps))
    t0 = time.perf_counter()
    done = 0
    while done < s.steps:
        m = min(per_call, s.steps - done)
        stacked = stack_micro_batches([batches[done + i] for i in range(m)], 1)
        state, metrics = learner.step(state, stacked)
        done += m
        row = dict(phase="sft", step=done, sft_samples=len(samples),
                   samples_per_s=done * s.batch_size / (time.perf_counter() - t0),
                   **{k: float(v) for k, v in jax.device_get(metrics).items()})
        run.metrics.write(row, ("loss", "samples_per_s"))
    return state


def run_sft(config, workdir: str):
    """--mode=sft: SFT only; the result is checkpoint 0 of WORKDIR (an RL starting point)."""
    run = Run(config, workdir, resume=False)
    try:
        state = run_sft_phase(run)
        run.save(0, state, "sft", force=True)
        run.ckpt.wait()
    finally:
        run.close()


# ------------------------------------------------------------------- RL
def iteration_seeds(config, iteration: int) -> np.ndarray:
    """World seed of every episode of the iteration, group by group (G per group).

    A group's G episodes share one instruction and play `rl.seeds_per_group` world seeds,
    G / seeds_per_group episodes each: 1 is the paper's same-seed group; more keep a
    near-deterministic policy's groups mixed (other layouts, other outcomes). Distinct
    across iterations, below the eval seeds.
    """
    r = config.rl
    k = r.seeds_per_group
    rng = np.random.default_rng([config.seed, iteration])
    seeds = rng.integers(0, config.eval.seed_offset, size=(r.groups_per_iter, k))
    return np.repeat(seeds, r.group_size // k, axis=1).reshape(-1)


def run_evaluation(run: Run, params, iteration: int, env_steps: int, final: bool = False,
                   log: bool = True):
    c = run.config
    tasks = run.tasks(eval_=True)
    n_env = min(c.eval.num_envs, c.eval.episodes * len(tasks))
    sharded = len(tasks) > n_env  # more tasks than envs: fresh pools shard by shard
    proc = distributed.process()  # multi-process: this process's share of the envs
    per_env = [tasks[i % len(tasks)] for i in range(max(len(tasks), n_env // proc[1]))]
    pool = None if sharded else run.pool("eval", per_env)
    sampler = run.eval_sampler
    key = jax.random.fold_in(jax.random.key(c.seed + 1), iteration)
    params = distributed.local_params(params, sampler.mesh)
    report, trajs = evaluate(pool, run.agent, sampler, params, process=proc,
                             episodes_per_task=c.eval.episodes,
                             seed_offset=c.eval.seed_offset, rng=key,
                             format_penalty=c.algo.format_penalty,
                             **resume_kwargs(c, run.workdir, iteration,
                                             tasks if sharded else None))
    row = dict(phase="eval", step=iteration, env_steps=env_steps,
               eval_success_rate=report["success_rate"], eval_episodes=report["episodes"],
               eval_mean_steps=report["mean_steps"])
    preemption.maybe_kill("eval", iteration)  # test hook, off by default
    if log:
        run.metrics.write(row, EVAL_KEYS)
    if not distributed.is_primary():
        return report
    if final:
        write_report(report, run.workdir)
    if c.eval.videos:
        _write_videos(run, trajs[:c.eval.videos], iteration)
    return report


def _write_videos(run: Run, trajs, iteration: int):
    from grow_jax.agent.videos import write_episode_gif

    out = os.path.join(run.workdir, "videos")
    for k, tr in enumerate(trajs):
        write_episode_gif(os.path.join(out, f"iter{iteration:05d}_{k}_{tr.task_id}.gif"),
                          [s.frame for s in tr.steps], tr.instruction,
                          [s.action_text for s in tr.steps], tr.success)


def evaluate_checkpoint(config, workdir: str) -> dict:
    """--mode=eval: the latest checkpoint of WORKDIR on config.eval's held-out episodes."""
    run = Run(config, workdir)
    try:
        latest = run.ckpt.latest_step()
        if run.start == "init":
            raise FileNotFoundError(f"no checkpoint in {run.ckpt.directory}: run --mode=train, "
                                    "--mode=sft or --mode=import_hf first, or set "
                                    "model.hf_dir / rl.init_checkpoint")
        extra = (run.ckpt.read_extra(latest) or {}) if run.start == "checkpoint" else {}
        state = TrainState(nnx.state(run.model, nnx.Param), None, None, None)
        params = state.params  # hf_dir: the loaded weights
        if run.start == "checkpoint":
            params = run.restore_params(state, step=latest)
        elif run.start == "init_checkpoint":
            params = run.restore_params(state, config.rl.init_checkpoint)
        report = run_evaluation(run, params, int(extra.get("iteration", latest or 0)),
                                int(extra.get("env_steps", 0)), final=True, log=False)
        print(f"[eval] {report['episodes']} episodes: success {100 * report['success_rate']:.1f}%"
              f" -> {os.path.join(workdir, 'eval.json')}", flush=True)
        return report
    finally:
        run.close()


def run_train(config, workdir: str):
    """--mode=train: GROW (or config.algo.name) RL, resuming from WORKDIR if possible."""
    validate(config)  # algo.* and the estimator's needs, before SFT and the first eval
    run = Run(config, workdir)
    try:
        with run.stop:
            _train(run)
    finally:
        run.close()


def _train(run: Run):
    c = run.config
    r = c.rl
    learner = run.learner("policy", rl_config_view(c))
    state = learner.init_state(seed=c.seed)
    value_pass = ValuePass(learner)
    rescore = LogprobPass(learner) if c.algo.recompute_old_logprobs else None
    sampler = run.sampler()
    latest = run.ckpt.latest_step()
    extra = run.ckpt.read_extra() if latest is not None else None  # falls back if damaged
    start, env_steps = 0, 0
    reference = care = None
    if extra is not None and extra.get("phase") == "rl":
        state, extra = run.restore(state)
        latest = run.ckpt.restored_step
        if c.algo.kl_coef > 0:
            reference = Reference.resume(learner, state.params, run.workdir)
        if c.algo.care_coef > 0:
            care = EmaReference.setup(learner, state.params, run.workdir, c.algo,
                                      c.checkpoint.keep, int(extra["iteration"]))
        start, env_steps = int(extra["iteration"]), int(extra.get("env_steps", 0))
        set_aside_metrics(run.workdir, lambda row: row.get("phase") == "sft"
                          or row.get("step", 0) <= start)
        print(f"[train] resumed from {run.ckpt.directory}/{latest} (iteration {start})",
              flush=True)
    else:
        if extra is not None:  # an sft / import_hf checkpoint of this workdir starts RL
            params = run.restore_params(state, step=latest)
            from_sft = extra.get("phase") == "sft"
        elif r.init_checkpoint:
            params = run.restore_params(state, r.init_checkpoint)
            from_sft = False
        elif run.start == "hf_dir":  # the loaded HF weights, as an import_hf checkpoint
            params, from_sft = state.params, False
        elif c.sft.steps > 0:
            params = run_sft_phase(run).params
            from_sft = True
        else:
            params, from_sft = state.params, False
        set_aside_metrics(run.workdir, lambda row: from_sft and row.get("phase") == "sft")
        state = learner.init_state(params=params, seed=c.seed)
        if c.algo.kl_coef > 0:
            reference = Reference.start(learner, state.params, run.workdir)
        if c.algo.care_coef > 0:
            care = EmaReference.setup(learner, state.params, run.workdir, c.algo,
                                      c.checkpoint.keep, None)
        run_evaluation(run, state.params, 0, 0)
        run.save(0, state, "rl", env_steps=0, force=True)
    tasks = run.tasks()
    g = r.group_size
    envs = distributed.local_envs(r.groups_per_iter, g)  # this process's share (all: 1 process)
    per_env = [tasks[(i // g) % len(tasks)] for i in envs]
    pool = run.pool("train", per_env)
    groups = [i // g for i in envs]
    skips = SkipGuard(r.max_skipped_updates)
    saved = start
    for it in range(start + 1, r.iterations + 1):
        t0 = time.perf_counter()
        seeds = iteration_seeds(c, it)[envs.start:envs.stop]
        stats = RolloutStats()
        key = jax.random.fold_in(jax.random.key(c.seed), it)
        trajs = run_episodes(pool, run.agent, sampler,
                             distributed.local_params(state.params, sampler.mesh), seeds=seeds,
                             groups=groups, rng=key, format_penalty=c.algo.format_penalty,
                             stats=stats, episode_ids=envs)
        trajs, stats = distributed.gather_rollout(trajs, stats)  # every process: all of them
        preemption.maybe_kill("rollout", it)  # test hook, off by default
        env_steps += stats.env_steps
        t_roll = time.perf_counter() - t0
        values_fn = None
        if c.algo.name in VALUE_ESTIMATORS:  # V(s) under the rollout's params, before updates
            values_fn = functools.partial(value_pass, state, minibatch=r.minibatch_size,
                                          model_config=run.mcfg, pad_id=run.pad_id)
        likelihood_fn = None if care is None else functools.partial(
            care.likelihoods, minibatch=r.minibatch_size, model_config=run.mcfg,
            pad_id=run.pad_id)
        samples, sstats = build_samples(trajs, c.algo, run.mcfg, values_fn=values_fn,
                                        thought_len=run.agent.thought_len,
                                        likelihood_fn=likelihood_fn)
        if not c.algo.train_stop_token:
            samples = drop_stop_targets(samples, run.agent.stop_ids)
        t1 = time.perf_counter()
        if rescore is not None and samples:  # behaviour logprobs in the learner's dtype
            sstats.update(recompute_old_logprobs(rescore, state.params, samples,
                                                 r.minibatch_size, run.mcfg, run.pad_id))
        if reference is not None and samples:
            reference.annotate(samples, r.minibatch_size, run.mcfg, run.pad_id)
        updates = diagnostics.UpdateLog(r.target_kl)
        if samples:
            shape = BatchShape.fit(samples, r.minibatch_size, shards=run.shards)
            for batches in epoch_batches(samples, shape, run.mcfg, epochs=r.epochs,
                                         accumulation=r.accumulation,
                                         seed=hash((c.seed, it)) % 2**31, pad_id=run.pad_id,
                                         pack_len=r.pack_len if r.pack else None,
                                         row_multiple=run.mesh.shape["data"]
                                         * run.mesh.shape["fsdp"]):
                state, m = learner.step(state, batches)
                m = {k: float(v) for k, v in jax.device_get(m).items()}
                skips.update(m, jax.tree.leaves(batches)[0].shape[0])  # pops the skip counters
                if updates.add(m):  # approx_kl > rl.target_kl: stop the remaining epochs
                    break
        preemption.maybe_kill("update", it)  # test hook, off by default
        metrics = updates.summary()
        metrics.update(skips.row())
        t_train = time.perf_counter() - t1
        row = dict(phase="train", step=it, env_steps=env_steps,
                   success_rate=float(np.mean([t.success for t in trajs])),
                   mean_return=float(np.mean([t.episode_return for t in trajs])),
                   mean_steps=float(np.mean([t.length for t in trajs])),
                   invalid_rate=float(np.mean([s.invalid for t in trajs for s in t.steps])),
                   samples=len(samples),
                   samples_per_s=len(samples) * updates.epochs_done / max(t_train, 1e-9),
                   rollout_s=t_roll, train_s=t_train, iter_s=time.perf_counter() - t0,
                   env_steps_per_s=stats.env_steps / max(t_roll, 1e-9),
                   env_faults=stats.env_faults, **sstats, **metrics,
                   **diagnostics.rollout_diagnostics(trajs, c.algo, samples))
        last = it == r.iterations
        if last or it % max(c.logging.every, 1) == 0:
            run.metrics.write(row, TRAIN_KEYS)
        skips.check(it, os.path.join(run.ckpt.directory, str(saved)))
        if c.eval.every and it % c.eval.every == 0 and not last:
            run_evaluation(run, state.params, it, env_steps)
        save = last or run.stop.requested or (c.checkpoint.every and it % c.checkpoint.every == 0)
        if care is not None:  # EMA update, saved before the checkpoint that resumes it
            care.after_iteration(it, state.params, save=bool(save))
        if save:
            run.save(it, state, "rl", env_steps=env_steps, force=True)
            saved = it
            preemption.maybe_kill("checkpoint", it)  # test hook: async write in flight
        if run.stop.requested and not last:
            run.ckpt.wait()
            print(f"[train] stopped by {run.stop.requested} after iteration {it}; checkpoint "
                  f"{run.ckpt.directory}/{it} written, rerun to resume", flush=True)
            return
    run.ckpt.wait()
    run_evaluation(run, state.params, r.iterations, env_steps, final=True)
    if distributed.is_primary():
        plot_learning_curve(run.workdir)
