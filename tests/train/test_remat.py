"""model.remat: recomputing decoder layers changes memory, not the loss or its gradients."""

import jax
import numpy as np
from flax import nnx

from grow_jax.data.samples import BatchShape, collate, decision_samples
from grow_jax.train.step import LossConfig, _loss

from ._synth import make_trajectory, tiny_config, tiny_model


def _loss_and_grads(remat: bool):
    cfg = tiny_config(remat=remat)
    rng = np.random.default_rng(0)
    tr = make_trajectory(rng, cfg, 4, frame_hw=(56, 56))
    samples = decision_samples(tr, rng.normal(size=4).astype(np.float32), cfg)
    mb = {k: jax.numpy.asarray(v) for k, v in
          collate(samples, BatchShape.fit(samples, 4), cfg).items()}
    graphdef, params, rest = nnx.split(tiny_model(cfg), nnx.Param, ...)
    fn = jax.jit(jax.value_and_grad(_loss, has_aux=True), static_argnums=(2, 3))
    (loss, _), grads = fn(params, rest, graphdef, LossConfig(), mb)
    return loss, grads, jax.make_jaxpr(fn, static_argnums=(2, 3))(params, rest, graphdef,
                                                                  LossConfig(), mb)


def test_remat_same_loss_and_grads():
    loss0, g0, jaxpr0 = _loss_and_grads(False)
    loss1, g1, jaxpr1 = _loss_and_grads(True)
    assert "remat" in str(jaxpr1) and "remat" not in str(jaxpr0)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
