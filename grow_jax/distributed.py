"""Multi-host runs on JAX's multi-controller runtime: start-up and the cross-process helpers.

`initialize(spec, num_processes, process_id)` runs `jax.distributed.initialize` before any
device is touched:
- spec "" / "none": one process, nothing to do;
- spec "auto": JAX's own cluster detection (Cloud TPU slices, SLURM, Open MPI, ...);
- spec "HOST:PORT": explicit coordinator, with the process count and this process's id
  (local CPU runs: launch/local.sh).
Unset flags fall back to GROW_JAX_COORDINATOR / GROW_JAX_NUM_PROCESSES / GROW_JAX_PROCESS_ID.
On CPU the cross-process collectives use gloo. A peer that dies (or hangs) makes every
other process exit non-zero within about `heartbeat_s` seconds with one line naming it: each
process runs a watchdog thread that posts a counter to the coordination service's key-value
store every second and watches the others' (`_Watchdog`); JAX's own heartbeat timeout, at
twice that, is the backstop. A process leaving on an uncaught exception does not wait in
JAX's shutdown barrier (where the others, blocked in a collective with it, would never meet
it): it exits after `heartbeat_s`, so they see it stop and exit too.

Gloo's 30 s set-up deadline: the first collective over a set of devices (on CPU) builds a
gloo context, and a process that reaches it more than 30 s after another (still compiling on
an oversubscribed host, say) makes the other fail with "Gloo context initialization failed:
DEADLINE_EXCEEDED". Later collectives on those devices reuse the context and wait as long as
it takes. So `initialize` builds the context of multihost_utils' gathers (one device per
process: `allgather_objects`, `host_value`, `barrier`) with every process in step, and every
jitted program whose collectives span processes runs through `lockstep`: its first call per
signature compiles, waits at a coordination-service barrier (no gloo), then runs, so every
process enters it within milliseconds.

Work split (`--mode=train`): the world seeds of an iteration's groups are global; process p
plays the contiguous slice `local_groups(n, P, p)` of them (`local_envs`: its envs), so no two
processes play one episode and process order equals the single-process env order. Each
process samples on its own devices (`local_mesh`, `local_params`) with as many rows per
device as a one-process run (`local_rows`), with keys per episode id, so an episode draws
what it would in a one-process run, to the last bit of its logprobs. `gather_rollout` then gives every
process all trajectories in global order: samples, advantages, batches and the metrics row
are computed identically everywhere, and `Learner.step` keeps each process's rows of the
global batch (`global_batch`). Evaluation: process p plays its share of each task's episodes
(`split_range`); `evaluate` merges the episode records.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import sys
import threading
import time

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

    kw = dict(heartbeat_timeout_seconds=2 * heartbeat_s, initialization_timeout=init_timeout_s)
    if spec == "auto":
        jax.distributed.initialize(**kw)
        return _started(heartbeat_s)
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
    return _started(heartbeat_s)


def _started(heartbeat_s: int) -> bool:
    """After `jax.distributed.initialize`: the watchdog, then the gathers' gloo context
    built with every process in step."""
    _Watchdog.start(heartbeat_s)
    _in_step()
    barrier("grow_jax/gather-context")
    return True


_LOCKSTEP_TIMEOUT_S = 3600  # a peer compiling a large model; a dead one is the watchdog's
_LOCKSTEP_IDS = itertools.count()  # every process reaches its barriers in the same order


def _in_step() -> None:
    """Waits at a coordination-service barrier (no gloo collective, so no gloo deadline)
    until every process has arrived; a no-op without a client."""
    from jax._src import distributed as jax_distributed  # the runtime's client (no API)

    client = getattr(jax_distributed.global_state, "client", None)
    if client is not None:
        client.wait_at_barrier(f"grow_jax/lockstep/{next(_LOCKSTEP_IDS)}",
                               _LOCKSTEP_TIMEOUT_S * 1000)


def lockstep(jitted):
    """`jitted` (a `jax.jit` function), so that in a multi-process run each new argument
    signature is compiled first and run only once every process has compiled it (see the
    module docstring: gloo's set-up deadline); `jitted` itself for one process."""
    import jax

    return jitted if jax.process_count() == 1 else _Lockstep(jitted)


class _Lockstep:
    def __init__(self, jitted):
        self.jitted, self.compiled = jitted, {}

    def __call__(self, *args):
        import jax

        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x))),
                            getattr(x, "sharding", None)) for x in leaves))
        if key not in self.compiled:
            self.compiled[key] = self.jitted.lower(*args).compile()
            _in_step()
        return self.compiled[key](*args)


class _Watchdog:
    """Peer liveness through the coordination service's key-value store: every `every_s` this
    process bumps its counter under KEY/<id> and reads the others'; a counter unchanged for
    `timeout_s` (or an unreachable coordinator) prints one line and exits this process with
    status 1, whatever its main thread is blocked in. At exit it only beats (through JAX's
    shutdown barrier, so a process that finished first is not taken for lost) and stops
    quietly once the client is shut down."""

    KEY = "grow_jax/watchdog"

    def __init__(self, client, timeout_s: float, every_s: float):
        import jax

        self.client, self.timeout_s, self.every_s = client, timeout_s, every_s
        self.me, self.n = jax.process_index(), jax.process_count()
        self.exiting = False

    @classmethod
    def start(cls, timeout_s: float, every_s: float = 1.0) -> None:
        from jax._src import distributed as jax_distributed  # the runtime's client (no API)

        client = getattr(jax_distributed.global_state, "client", None)
        if client is None:  # JAX's heartbeat timeout alone then stops the run
            return
        dog = cls(client, timeout_s, every_s)
        atexit.register(dog.at_exit)  # runs before JAX's shutdown (registered earlier)
        threading.Thread(target=dog.run, name="grow_jax-watchdog", daemon=True).start()

    def run(self) -> None:
        count, now = 0, time.monotonic()
        seen = {p: (None, now) for p in range(self.n) if p != self.me}
        while True:
            count += 1
            try:
                self.client.key_value_set(f"{self.KEY}/{self.me}", str(count),
                                          allow_overwrite=True)
                beats = {k.rsplit("/", 1)[-1]: v for k, v in
                         self.client.key_value_dir_get(self.KEY)}
            except Exception as e:  # noqa: BLE001 - gRPC errors of many kinds
                if self.exiting:
                    return
                self.lost(f"lost the coordinator (process 0 at the --distributed address): "
                          f"{' '.join(str(e).split())[:200]}")
            now = time.monotonic()
            for p, (value, since) in list(seen.items()):
                beat = beats.get(str(p))
                if beat != value:
                    seen[p] = (beat, now)
                elif now - since > self.timeout_s and not self.exiting:
                    self.lost(f"lost peer process {p} of {self.n}: no heartbeat for "
                              f"{self.timeout_s:.0f} s (it died, hung or lost the network)")
            time.sleep(self.every_s)

    def at_exit(self) -> None:
        """After an uncaught exception (already printed; a collective that failed because a
        peer died, say): give the watchdog `timeout_s` to name a lost peer, then exit with
        status 1 without JAX's shutdown barrier. Else let that barrier run, beating on."""
        if getattr(sys, "last_value", None) is not None:
            sys.stdout.flush()
            time.sleep(self.timeout_s + 2 * self.every_s)  # lost() may exit first
            print(f"error: process {self.me}: stopped by the error above", file=sys.stderr,
                  flush=True)
            os._exit(1)
        self.exiting = True

    def lost(self, why: str) -> None:
        print(f"error: process {self.me}: {why}; stopping", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)




def local_groups(n_groups: int, num_processes: int, process_id: int) -> range:
    """The contiguous slice of an iteration's groups that process `process_id` plays."""
    if n_groups % num_processes:
        raise ValueError(f"rl.groups_per_iter ({n_groups}) must be a multiple of the "
                         f"process count ({num_processes})")
    k = n_groups // num_processes
    return range(process_id * k, (process_id + 1) * k)


def process() -> tuple[int, int]:
    """(this process's index, process count)."""
    import jax

    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """Process 0: the one that writes metrics, reports, videos and other workdir files."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (no-op for one process)."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def local_envs(n_groups: int, group_size: int) -> range:
    """Global indices of the envs (group-major) this process plays in an iteration."""
    p, n = process()
    g = local_groups(n_groups, n, p)
    return range(g.start * group_size, g.stop * group_size)


def split_range(n: int, parts: int, index: int) -> range:
    """Part `index` of 0..n-1 cut into `parts` contiguous pieces (sizes differ by <= 1)."""
    k, extra = divmod(n, parts)
    start = index * k + min(index, extra)
    return range(start, start + k + (index < extra))


def local_mesh(mesh):
    """The block of `mesh` on this process's devices (same axis names), for work each
    process does on its own (sampling); `mesh` itself for one process. Raises if this
    process's devices are not one block of the mesh."""
    import jax

    if jax.process_count() == 1:
        return mesh
    devs = mesh.devices
    mine = np.vectorize(lambda d: d.process_index == jax.process_index())(devs)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mine))
    if not mine[box].all() or mine[box].size != int(mine.sum()):
        raise ValueError(f"process {jax.process_index()}'s devices are not one block of the "
                         f"mesh {dict(mesh.shape)}; choose mesh sizes whose leading axes "
                         "split over processes")
    return jax.sharding.Mesh(devs[box], mesh.axis_names, axis_types=mesh.axis_types)


def local_rows(rows: int, mesh) -> int:
    """This process's share of a row bucket of `rows` on `mesh` (its devices / the mesh's),
    so that each of its devices holds as many rows as in a one-process run of the mesh
    (same per-device shapes: same float results); `rows` for one process."""
    local = local_mesh(mesh)
    return max(1, rows * local.size // mesh.size)


def local_params(tree, mesh):
    """`tree`'s global arrays as arrays on `mesh` (this process's block, `local_mesh`), with
    the same partition specs. A leaf whose local shards already hold what the local mesh
    needs (not sharded over processes) is rewrapped without a copy; the others are
    all-gathered (a collective: every process must call this at the same point)."""
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding

    if jax.process_count() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    out, gather = [], []
    for i, x in enumerate(leaves):
        loc = NamedSharding(mesh, x.sharding.spec)
        want = loc.devices_indices_map(x.shape)
        have = x.sharding.devices_indices_map(x.shape)
        if all(want[d] == have[d] for d in want):
            shards = {s.device: s.data for s in x.addressable_shards}
            out.append(jax.make_array_from_single_device_arrays(x.shape, loc,
                                                                [shards[d] for d in want]))
        else:
            out.append(loc)
            gather.append(i)
    if gather:
        full = multihost_utils.process_allgather([leaves[i] for i in gather], tiled=True)
        for i, value in zip(gather, full):
            out[i] = jax.device_put(np.asarray(value), out[i])
    return jax.tree.unflatten(treedef, out)


def gather_rollout(trajs: list, stats):
    """(all processes' trajectories in process order, their summed RolloutStats) on every
    process; timings are the slowest process's."""
    import jax

    if jax.process_count() == 1:
        return trajs, stats
    parts = allgather_objects((trajs, stats))
    return [t for ts, _ in parts for t in ts], merge_stats([s for _, s in parts])


def merge_stats(all_stats: list):
    """One RolloutStats from every process's: counts summed, times (`*_s`) the maximum."""
    import dataclasses

    out = dataclasses.replace(all_stats[0])
    for f in dataclasses.fields(out):
        vals = [getattr(s, f.name) for s in all_stats]
        setattr(out, f.name, max(vals) if f.name.endswith("_s") else sum(vals))
    return out


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


def put_batch(batch: dict, shardings: dict) -> dict:
    """Host arrays (the same full batch on every process) -> jax Arrays on `shardings`."""
    import jax

    if jax.process_count() == 1:
        return jax.device_put(batch, shardings)
    return global_batch(batch, shardings)


def host_value(x) -> np.ndarray:
    """A jax Array's whole value on this host (all-gathered if other processes hold part)."""
    import jax
    from jax.experimental import multihost_utils

    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
