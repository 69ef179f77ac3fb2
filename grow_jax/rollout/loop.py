"""The host rollout loop: G episodes of each of B tasks, one sampler call per turn.

Every turn, the prompts of all live episodes go through one jitted `Sampler.sample`; the
sampled tokens are decoded into env actions (garbled text -> no-op, flagged invalid, with
a format penalty), all live envs step together through the `EnvPool`, and each decision
is appended to its episode's `Trajectory`. Finished envs drop out of the batch.

Pipelining (`env.pipeline`, a pool with `step_async`): the envs are cut into two halves
(alternate env indices, so each half has envs on every worker); while one half steps in the
workers, the loop samples the other half's actions, and it submits a half's step only once
the other half's step is back (a worker never holds two). A turn then costs about
max(envs, sampler) instead of their sum. The sampler draws each episode's tokens from a key
of its own (see `run_episodes`), so the trajectories are those of the sequential loop for the
same seeds and rng: the same tokens, actions, rewards and frames. Logprobs agree to float
rounding only: XLA's kernels for a batch of 64 rows can round a row's logits in the last
bit differently than for 8 (on the CPU: 1 ulp, ~5e-7 in logprob), and a sampled token could
in principle flip at an exact tie of that size.
`RolloutStats.env_s` is then the time the loop waited for envs (not hidden by sampling).

Env faults (a pool that restarts what faulted, see `grow_jax.envs.pool`): an episode whose
env faulted leaves the batch; the pool's `fault_policy` "drop" (the default for pools
without one) removes it from the result, "fail" keeps it as a failure. Both are counted in
`RolloutStats.env_faults`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol, Sequence

import jax
import numpy as np

from grow_jax.data.samples import encode_images
from grow_jax.rollout.types import Step, Trajectory


class Agent(Protocol):
    """What the loop needs from the agent: prompts in, env actions out."""

    history: int  # previous decisions shown in each prompt; 0 = current frame only (GROW),
    # -1 = the whole episode so far (multi-turn conversation, trajectory-level GRPO)

    def prompt_ids(self, instruction: str, shown: Sequence[Step], image_tokens: int
                   ) -> np.ndarray:
        """Token ids of the prompt for a decision after the previous steps `shown` (their
        frames come first in the prompt, the current frame last)."""

    def decode(self, action_ids: np.ndarray) -> tuple[Any, bool, str]:
        """(env action, valid, action text); never raises."""


def shown_steps(traj: Trajectory, history: int) -> list[Step]:
    """The previous steps a prompt shows: none (0), the last k (k > 0) or all (-1)."""
    if history < 0:
        return list(traj.steps)
    return traj.steps[max(0, len(traj.steps) - history):] if history else []


@dataclasses.dataclass
class RolloutStats:
    env_steps: int = 0
    decisions: int = 0
    prep_s: float = 0.0  # prompts and image patches (host)
    sample_s: float = 0.0  # the sampler call (host batching + jitted prefill/decode)
    env_s: float = 0.0  # time stepping envs
    total_s: float = 0.0
    env_faults: int = 0  # episodes lost to an env fault (dropped or failed)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["env_steps_per_s"] = self.env_steps / max(self.total_s, 1e-9)
        return d


def split_images(encoded, counts: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pixel_values, image_grid_thw) of all rows' frames -> one pair per row of
    `counts[r]` frames (views, no copies): the turn's frames are patched in one call."""
    pixels, grid = encoded
    frame_ends = np.cumsum(counts)[:-1]
    patch_ends = np.cumsum(grid.prod(-1))[frame_ends - 1]
    return list(zip(np.split(pixels, patch_ends), np.split(grid, frame_ends)))


def image_token_count(frame_shape, model_config, fit_mode="pad") -> int:
    """Merged vision tokens one frame occupies in the prompt."""
    v = model_config.vision
    f = v.patch_size * v.spatial_merge_size
    h, w = (-(-frame_shape[0] // f) * f, -(-frame_shape[1] // f) * f)
    return (h // v.patch_size) * (w // v.patch_size) // v.spatial_merge_size**2


def run_episodes(pool, agent: Agent, sampler, params, *, seeds: Sequence[int],
                 groups: Sequence[int], rng: jax.Array, format_penalty: float = 0.0,
                 fit_mode: str = "pad", stats: RolloutStats | None = None,
                 episode_ids: Sequence[int] | None = None,
                 pipeline: bool | None = None) -> list[Trajectory]:
    """Plays one episode in every env of `pool` (env i: seed seeds[i], group groups[i]).

    Decision t of env i samples with key fold_in(fold_in(rng, t), episode_ids[i]) (default
    ids 0..n-1): an episode's tokens depend on its id, not on which envs share its batch,
    so envs split over processes (or pipelined halves) play what one process would.
    Returns the trajectories in env order. Episodes end on termination, truncation or
    the env's own step cap (`Task.max_steps`). `pipeline` (None: the pool's `pipeline`,
    i.e. `env.pipeline`) steps one half of the envs while sampling the other half's actions
    (module docstring); the trajectories are the same either way.
    """
    stats = stats if stats is not None else RolloutStats()
    t_start = time.perf_counter()
    n = pool.num_envs
    if len(seeds) != n or len(groups) != n:
        raise ValueError(f"need one seed and one group per env ({n}), got {len(seeds)} seeds "
                         f"and {len(groups)} groups")
    uids = np.arange(n) if episode_ids is None else np.asarray(episode_ids)
    if len(uids) != n:
        raise ValueError(f"need one episode id per env ({n}), got {len(uids)}")
    pipeline = getattr(pool, "pipeline", False) if pipeline is None else pipeline
    if pipeline and not hasattr(pool, "step_async"):
        raise ValueError(f"pipelined rollouts (env.pipeline) need a pool with step_async "
                         f"(EnvPool, RayEnvPool), got {type(pool).__name__}")
    t0 = time.perf_counter()
    obs = pool.reset(seeds)
    stats.env_s += time.perf_counter() - t0
    mcfg = sampler.config
    faulted = {i for i in range(n) if obs[i] is None}  # the env faulted at reset
    trajs = [Trajectory(task_id=pool.tasks[i].task_id,
                        instruction=pool.tasks[i].instruction if i in faulted
                        else obs[i]["instruction"],
                        seed=int(seeds[i]), group=int(groups[i]), history=agent.history,
                        family=pool.tasks[i].family) for i in range(n)]
    live = [i for i in range(n) if i not in faulted]
    n_img = image_token_count(obs[live[0]]["image"].shape, mcfg, fit_mode) if live else 0
    prompt_cache: dict = {}

    def act(ids: list[int], turn: int):
        """Prompts, one sampler call and decoded actions for envs `ids` (all at `turn`)."""
        t0 = time.perf_counter()
        prompts, frames = [], []
        for i in ids:
            tr = trajs[i]
            shown = shown_steps(tr, agent.history)
            key = (tr.instruction, tuple(st.action_text for st in shown))
            p_ids = prompt_cache.get(key) if agent.history >= 0 else None
            if p_ids is None:
                p_ids = agent.prompt_ids(tr.instruction, shown, n_img)
                if agent.history >= 0:
                    prompt_cache[key] = p_ids
            prompts.append(p_ids)
            frames.append([st.frame for st in shown] + [obs[i]["image"]])
        images = split_images(encode_images([f for fs in frames for f in fs], mcfg, fit_mode),
                              [len(fs) for fs in frames])
        t1 = time.perf_counter()
        stats.prep_s += t1 - t0
        tokens, logps = sampler.sample(params, prompts, images,
                                       rng=jax.random.fold_in(rng, turn), row_ids=uids[ids])
        stats.sample_s += time.perf_counter() - t1
        return prompts, tokens, logps, [agent.decode(t) for t in tokens]

    def record(ids: list[int], acted, stepped) -> list[int]:
        """Appends each env's decision; returns the envs still playing."""
        prompts, tokens, logps, decoded = acted
        new_obs, rew, term, trunc, infos = stepped
        still = []
        for j, i in enumerate(ids):
            if "env_fault" in infos[j]:
                faulted.add(i)
                continue
            _, valid, text = decoded[j]
            tr = trajs[i]
            tr.steps.append(Step(frame=obs[i]["image"], prompt_ids=np.asarray(prompts[j], np.int32),
                                 action_ids=np.asarray(tokens[j], np.int32),
                                 logprobs=np.asarray(logps[j], np.float32),
                                 reward=float(rew[j]) - (0.0 if valid else format_penalty),
                                 invalid=not valid, action_text=text))
            obs[i] = new_obs[j]
            if term[j] or trunc[j]:
                tr.success = bool(infos[j].get("success", False))
                tr.terminated, tr.truncated = bool(term[j]), bool(trunc[j])
            else:
                still.append(i)
        stats.env_steps += len(ids)
        stats.decisions += len(ids)
        return still

    def timed(fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        stats.env_s += time.perf_counter() - t0
        return out

    if not pipeline:
        turn = 0
        while live:
            acted = act(live, turn)
            stepped = timed(lambda: pool.step([d[0] for d in acted[3]], indices=live))
            live, turn = record(live, acted, stepped), turn + 1
    else:
        # envs live[0::2] and live[1::2]: one half samples while the other steps
        halves = [(h, 0) for h in (live[0::2], live[1::2]) if h]  # (envs, turn) to sample
        stepping = None  # (half's envs, turn, its sampler output, step handle)
        while halves or stepping:
            ids, turn = halves.pop(0) if halves else (None, None)
            acted = act(ids, turn) if ids else None
            if stepping:  # the other half's step, then its records
                s_ids, s_turn, s_acted, handle = stepping
                still = record(s_ids, s_acted, timed(pool.step_wait, handle))
                if still:
                    halves.append((still, s_turn + 1))
            stepping = None if acted is None else (
                ids, turn, acted, timed(pool.step_async, [d[0] for d in acted[3]], ids))
    stats.total_s += time.perf_counter() - t_start
    stats.env_faults += len(faulted)
    if getattr(pool, "fault_policy", "drop") == "fail":
        for i in faulted:
            trajs[i].success, trajs[i].terminated, trajs[i].truncated = False, False, True
        return trajs
    return [tr for i, tr in enumerate(trajs) if i not in faulted]
