"""Multi-host runs on JAX's multi-controller runtime: start-up and the cross-process helpers.

`initialize(spec, num_processes, process_id)` runs `jax.distributed.initialize` before any
device is touched:
- spec "" / "none": one process, nothing to do;
- spec "auto": JAX's own cluster detection (Cloud TPU slices, SLURM, Open MPI, ...);
- spec "HOST:PORT": explicit coordinator, with the process count and this process's id
  (local CPU runs: launch/local.sh).
Unset flags fall back to GROW_JAX_COORDINATOR / GROW_JAX_NUM_PROCESSES / GROW_JAX_PROCESS_ID.
On CPU the cross-process collectives use gloo. A peer that stops sending heartbeats makes
every other process exit (non-zero, naming the lost task) within `heartbeat_s`.

Work split: the world seeds of an iteration's groups are global; process p plays the
contiguous slice `local_groups(n, P, p)` of them, so no two processes play one episode and
process order equals the single-process env order.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

ENV_COORDINATOR = "GROW_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "GROW_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GROW_JAX_PROCESS_ID"


def initialize(spec: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_s: int = 20,
               init_timeout_s: int = 300) -> bool:
    """Joins the run's processes; returns whether this is a multi-process run."""
    spec = spec if spec else os.environ.get(ENV_COORDINATOR, "")
    if spec in ("", "none"):
        return False
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    import jax

    kw = dict(heartbeat_timeout_seconds=heartbeat_s, initialization_timeout=init_timeout_s)
    if spec == "auto":
        jax.distributed.initialize(**kw)
        return True
    if ":" not in spec:
        raise ValueError(f"--distributed must be 'auto', 'none' or HOST:PORT, got {spec!r}")
    if num_processes is None or process_id is None:
        raise ValueError(f"--distributed={spec} needs --num_processes and --process_id "
                         f"(or {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID})")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(spec, num_processes=num_processes, process_id=process_id, **kw)
    return True


def local_groups(n_groups: int, num_processes: int, process_id: int) -> range:
    """The contiguous slice of an iteration's groups that process `process_id` plays."""
    if n_groups % num_processes:
        raise ValueError(f"rl.groups_per_iter ({n_groups}) must be a multiple of the "
                         f"process count ({num_processes})")
    k = n_groups // num_processes
    return range(process_id * k, (process_id + 1) * k)


def global_batch(batch: dict, shardings: dict) -> dict:
    """Host arrays -> global jax Arrays on `shardings` (whose devices span every process).

    Each process passes the same full batch (samples are all-gathered before batching);
    `jax.make_array_from_process_local_data` keeps the rows of this process's devices.
    Single-process: the batch is returned unchanged (jit places it)."""
    import jax

    if jax.process_count() == 1:
        return batch
    return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v), v.shape)
            for k, v in batch.items()}


def allgather_objects(obj) -> list:
    """Every process's `obj` (picklable), in process order, on every process."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int64))
    buf = np.zeros(int(np.max(sizes)), np.uint8)
    buf[:data.size] = data
    allbuf = multihost_utils.process_allgather(buf)
    return [pickle.loads(allbuf[i, :int(sizes[i][0])].tobytes())
            for i in range(jax.process_count())]


def mean_metrics(metrics: dict, weight: float = 1.0) -> dict:
    """Weighted mean of per-process float metrics (same keys everywhere), on every process."""
    rows = allgather_objects((weight, metrics))
    total = sum(w for w, _ in rows)
    return {k: sum(w * m[k] for w, m in rows) / max(total, 1e-12) for k in metrics}
