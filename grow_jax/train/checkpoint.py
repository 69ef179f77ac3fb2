"""Orbax checkpointing for training runs: a thin wrapper over `ocp.CheckpointManager`.

One checkpoint step holds several named items, each saved with its own orbax handler:

- pytrees of arrays (``"params"``, ``"opt_state"``, ``"rng"``, ``"step"``, ...) go through
    `StandardSave` / `StandardRestore`; restore places every array on the sharding carried by
    the abstract tree you pass (`jax.ShapeDtypeStruct(..., sharding=...)`), so a checkpoint
    written on one mesh can be read onto another;
- items that are already orbax `CheckpointArgs` (for example grain's
    ``grain.checkpoint.CheckpointSave(iterator)``) are passed through unchanged;
- ``extra_json`` (run config, model config, data-iterator bookkeeping) is saved as the JSON
    item ``"extra"`` and can be read on its own with `read_extra`, before any model is built.

Conventions used across grow_jax: ``"params"`` is the pure nested dict
``nnx.to_pure_dict(nnx.state(model, nnx.Param))``; ``extra["model_config"]`` is
`Qwen2VLConfig.to_hf()` (see `grow_jax.main`), so other modes can rebuild the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

import jax
import orbax.checkpoint as ocp
from etils import epath

EXTRA_ITEM = "extra"


def _save_args(item: Any) -> ocp.args.CheckpointArgs:
    if isinstance(item, ocp.args.CheckpointArgs):
        return item
    return ocp.args.StandardSave(item)


def _abstract(leaf: Any) -> Any:
    """Concrete jax arrays become ShapeDtypeStructs that keep their sharding."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf


def _restore_args(item: Any) -> ocp.args.CheckpointArgs:
    if isinstance(item, ocp.args.CheckpointArgs):
        return item
    return ocp.args.StandardRestore(jax.tree.map(_abstract, item))


class Checkpointer:
    """Saves and restores named training items under ``directory`` (e.g. ``WORKDIR/checkpoints``).

    Args:
        directory: folder (local or gs://) holding one sub-folder per step; created if missing.
        max_to_keep: keep only the newest N steps (None keeps all).
        async_save: write in a background thread; `wait()` / `close()` block until done.
    """

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, async_save: bool = True
    ):
        directory = os.fspath(directory)
        if "://" not in directory:  # local folder; remote (gs://...) paths stay as given
            directory = os.path.abspath(directory)
        self.directory = epath.Path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        step: int,
        items: Mapping[str, Any],
        extra_json: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves ``items`` (name -> pytree or orbax args) and optional JSON metadata at ``step``.

        Returns whether a save was started (orbax skips steps its policy does not want unless
        ``force``). With async saving, arrays are copied off-device before this returns, so the
        caller may donate or overwrite them afterwards.
        """
        if EXTRA_ITEM in items:
            raise ValueError(f"checkpoint item name {EXTRA_ITEM!r} is reserved for extra_json")
        args = {name: _save_args(item) for name, item in items.items()}
        if extra_json is not None:
            args[EXTRA_ITEM] = ocp.args.JsonSave(dict(extra_json))
        return self._manager.save(step, args=ocp.args.Composite(**args), force=force)

    def latest_step(self) -> int | None:
        """Newest finished step, or None if the folder holds no checkpoint."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def _resolve_step(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (steps: {self.all_steps()})"
            )
        return step

    def restore(self, abstract_items: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
        """Restores the named items of ``step`` (default: latest) onto the given shardings.

        ``abstract_items`` maps item name -> a pytree of `jax.ShapeDtypeStruct` (with
        ``sharding``), concrete arrays (their shape/dtype/sharding are used), python/numpy
        scalars, or an orbax restore args object. Only the named items are read. The result
        also holds ``"extra"`` (the JSON metadata) when the step has it.
        """
        step = self._resolve_step(step)
        args = {name: _restore_args(item) for name, item in abstract_items.items()}
        if self._has_extra(step):
            args[EXTRA_ITEM] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return {name: restored[name] for name in args}

    def read_extra(self, step: int | None = None) -> dict[str, Any] | None:
        """The JSON metadata saved with ``step`` (default: latest), or None if it has none."""
        step = self._resolve_step(step)
        if not self._has_extra(step):
            return None
        return self._manager.restore(
            step, args=ocp.args.Composite(**{EXTRA_ITEM: ocp.args.JsonRestore()})
        )[EXTRA_ITEM]

    def _has_extra(self, step: int) -> bool:
        return (self.directory / str(step) / EXTRA_ITEM).is_dir()

    def wait(self) -> None:
        """Blocks until every pending asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases orbax's background resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
