"""The host rollout loop: G episodes of each of B tasks, one sampler call per turn.

Every turn, the prompts of all live episodes go through one jitted `Sampler.sample`; the
sampled tokens are decoded into env actions (garbled text -> no-op, flagged invalid, with
a format penalty), all live envs step together through the `EnvPool`, and each decision
is appended to its episode's `Trajectory`. Finished envs drop out of the batch.

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


def image_token_count(frame_shape, model_config, fit_mode="pad") -> int:
    """Merged vision tokens one frame occupies in the prompt."""
    v = model_config.vision
    f = v.patch_size * v.spatial_merge_size
    h, w = (-(-frame_shape[0] // f) * f, -(-frame_shape[1] // f) * f)
    return (h // v.patch_size) * (w // v.patch_size) // v.spatial_merge_size**2


def run_episodes(pool, agent: Agent, sampler, params, *, seeds: Sequence[int],
                 groups: Sequence[int], rng: jax.Array, format_penalty: float = 0.0,
                 fit_mode: str = "pad", stats: RolloutStats | None = None,
                 episode_ids: Sequence[int] | None = None) -> list[Trajectory]:
    """Plays one episode in every env of `pool` (env i: seed seeds[i], group groups[i]).

    Decision t of env i samples with key fold_in(fold_in(rng, t), episode_ids[i]) (default
    ids 0..n-1): an episode's tokens depend on its id, not on which envs share its batch,
    so envs split over processes play what one process would.
    Returns the trajectories in env order. Episodes end on termination, truncation or
    the env's own step cap (`Task.max_steps`).
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
    turn = 0
    while live:
        t0 = time.perf_counter()
        prompts, images = [], []
        for i in live:
            tr = trajs[i]
            shown = shown_steps(tr, agent.history)
            key = (tr.instruction, tuple(st.action_text for st in shown))
            ids = prompt_cache.get(key) if agent.history >= 0 else None
            if ids is None:
                ids = agent.prompt_ids(tr.instruction, shown, n_img)
                if agent.history >= 0:
                    prompt_cache[key] = ids
            prompts.append(ids)
            images.append(encode_images([st.frame for st in shown] + [obs[i]["image"]], mcfg,
                                        fit_mode))
        t1 = time.perf_counter()
        stats.prep_s += t1 - t0
        tokens, logps = sampler.sample(params, prompts, images, rng=jax.random.fold_in(rng, turn),
                                       row_ids=uids[live])
        turn += 1
        stats.sample_s += time.perf_counter() - t1
        actions, decoded = [], []
        for j, i in enumerate(live):
            action, valid, text = agent.decode(tokens[j])
            actions.append(action)
            decoded.append((valid, text))
        t0 = time.perf_counter()
        new_obs, rew, term, trunc, infos = pool.step(actions, indices=live)
        stats.env_s += time.perf_counter() - t0
        still = []
        for j, i in enumerate(live):
            if "env_fault" in infos[j]:
                faulted.add(i)
                continue
            valid, text = decoded[j]
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
        stats.env_steps += len(live)
        stats.decisions += len(live)
        live = still
    stats.total_s += time.perf_counter() - t_start
    stats.env_faults += len(faulted)
    if getattr(pool, "fault_policy", "drop") == "fail":
        for i in faulted:
            trajs[i].success, trajs[i].terminated, trajs[i].truncated = False, False, True
        return trajs
    return [tr for i, tr in enumerate(trajs) if i not in faulted]
