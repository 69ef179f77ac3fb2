"""One process of the multi-process tests (run as a script; see test_multiprocess.py).

    python _worker.py OUT COORD NUM_PROCESSES PROCESS_ID MODE

MODE "learn": 3 updates of the tiny model's learner on a data x fsdp mesh over every
process's devices, from the same synthetic GROW batch; process 0 writes params + metrics
to OUT (npz). "learn_fixed": the same with the fixed-order step (mesh.fixed_order_reduce). MODE "die": process 1 exits right after start-up; the others keep running
collectives until the runtime stops them. MODE "skew": process 1 arrives 35 s late (past
gloo's 30 s set-up deadline) at an all-process gather and at a `lockstep` program whose
all-reduce spans every device; process 0 writes both results to OUT.
"""

import os
import sys

out, coord, n_proc, pid, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grow_jax import distributed  # noqa: E402

if n_proc > 1:
    distributed.initialize(coord, n_proc, pid, heartbeat_s=10, init_timeout_s=60)

import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

if mode == "die":
    if pid == 1:
        time.sleep(2)
        os._exit(0)
    while True:  # a learner step every second, as a training loop would run
        multihost_utils.process_allgather(np.ones(4, np.float32))
        time.sleep(1)

if mode == "skew":
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from grow_jax.sharding import make_mesh
    late = lambda: time.sleep(35 if pid == 1 else 0)  # noqa: E731 - a slow compile, say
    late()
    gathered = multihost_utils.process_allgather(np.full(2, pid, np.float32))
    mesh = make_mesh(data=2, fsdp=2)  # an all-reduce over all 4 devices, as the train step's
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P(("data", "fsdp"))),
                                               np.full(2, pid + 1, np.float32), (4,))
    late()
    total = distributed.lockstep(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P())))(x)
    if pid == 0:
        np.savez(out, gathered=gathered, total=np.asarray(total))
    sys.exit(0)

from grow_jax import sharding  # noqa: E402
from grow_jax.data.pipeline import stack_micro_batches  # noqa: E402
from grow_jax.data.samples import BatchShape, collate, decision_samples  # noqa: E402
from grow_jax.train.optim import make_optimizer  # noqa: E402
from grow_jax.train.step import Learner, LossConfig  # noqa: E402
from train._synth import make_trajectory, tiny_config, tiny_model  # noqa: E402


class Opt:
    lr, warmup_steps, total_steps, schedule, grad_clip = 1e-2, 0, 100, "constant", 1.0
    weight_decay, final_lr_ratio, b1, b2, eps, freeze_vision = 0.0, 0.1, 0.9, 0.999, 1e-8, False


cfg = tiny_config()
rng = np.random.default_rng(0)
samples = []
while len(samples) < 16:
    tr = make_trajectory(rng, cfg, 4, frame_hw=(56, 56))
    samples += decision_samples(tr, rng.normal(size=4).astype(np.float32), cfg)
samples = samples[:16]
fixed = mode == "learn_fixed"  # mesh.fixed_order_reduce: shard-major batches
shape = BatchShape.fit(samples, 8, shards=4 if fixed else 1)
batch = stack_micro_batches([collate(samples[i:i + 8], shape, cfg) for i in (0, 8)], 1)
assert jax.device_count() == 4, jax.device_count()
mesh = sharding.make_mesh(data=2, fsdp=2)
model = sharding.shard_model(tiny_model(cfg), mesh)
learner = Learner(model, make_optimizer(Opt, nnx.state(model, nnx.Param)), LossConfig(), mesh,
                  fixed_order=fixed)
state = learner.init_state(seed=0)
rows = []
for _ in range(3):
    state, m = learner.step(state, batch)
    rows.append({k: float(v) for k, v in jax.device_get(m).items()})
params = [np.asarray(x) for x in
          multihost_utils.process_allgather(jax.tree.leaves(state.params), tiled=True)]
# The cross-process helpers: groups split, objects gathered, metrics averaged.
groups = list(distributed.local_groups(8, jax.process_count(), jax.process_index()))
gathered = distributed.allgather_objects(groups)
mean = distributed.mean_metrics({"x": float(jax.process_index())})
if jax.process_index() == 0:
    np.savez(out, *params, rows=np.asarray([[r[k] for k in sorted(r)] for r in rows]),
             groups=np.asarray(sum(gathered, [])), mean=mean["x"])
