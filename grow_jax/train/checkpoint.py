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

Reliability (docs/reliability.md): orbax writes each step into a temporary folder and renames
it when complete, so an interrupted (asynchronous) write never becomes the latest step.
`restore` / `read_extra` without an explicit step fall back from a damaged newest checkpoint
(truncated or corrupt files) to the previous one with a one-line warning, and move the damaged
step folder to ``checkpoints.damaged/`` next to the checkpoint folder (nothing is deleted).
A checkpoint whose tensors do not fit the abstract tree (another model size) is a one-line
`CheckpointMismatch` naming the first differing tensor.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any, Self

import jax
import orbax.checkpoint as ocp
from etils import epath

from grow_jax.errors import RunError

EXTRA_ITEM = "extra"
DAMAGED_SUFFIX = ".damaged"  # sibling folder receiving damaged step folders


class CheckpointMismatch(RunError):
    """The checkpoint's tensors do not fit the model (names or shapes differ)."""


class CheckpointDamaged(RunError):
    """No readable checkpoint: the requested (or every) step failed to restore."""


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)


def _shapes(tree) -> dict[str, tuple | None]:
    """tensor path -> shape (None for leaves without one) of an abstract or metadata tree."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = getattr(leaf, "shape", None)
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            shape = jax.eval_shape(jax.random.key_data, leaf).shape  # saved as its key data
        out[_path_str(path)] = None if shape is None else tuple(shape)
    return out


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
        self.restored_step: int | None = None  # the step the last restore/read_extra read

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
        also holds ``"extra"`` (the JSON metadata) when the step has it; the step actually
        read is `restored_step` (older than the latest if the latest was damaged).

        Raises `CheckpointMismatch` if the saved tensors do not fit ``abstract_items``,
        `CheckpointDamaged` if no candidate step could be read.
        """

        def read(step):
            self._check_fits(step, abstract_items)
            args = {name: _restore_args(item) for name, item in abstract_items.items()}
            if self._has_extra(step):
                args[EXTRA_ITEM] = ocp.args.JsonRestore()
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
            return {name: restored[name] for name in args}

        return self._with_fallback(step, read)

    def read_extra(self, step: int | None = None) -> dict[str, Any] | None:
        """The JSON metadata saved with ``step`` (default: latest readable), or None if it
        has none."""

        def read(step):
            if not self._has_extra(step):
                return None
            return self._manager.restore(
                step, args=ocp.args.Composite(**{EXTRA_ITEM: ocp.args.JsonRestore()})
            )[EXTRA_ITEM]

        return self._with_fallback(step, read)

    def _with_fallback(self, step: int | None, read):
        """read(step) for an explicit step; else newest first, setting damaged steps aside."""
        if step is not None:
            step = self._resolve_step(step)
            try:
                out = read(step)
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
                raise CheckpointDamaged(
                    f"checkpoint {self.directory / str(step)} cannot be read: {_one_line(e)}"
                ) from e
            self.restored_step = step
            return out
        self._resolve_step(None)  # FileNotFoundError when there is none at all
        failures = []
        for candidate in sorted(self._manager.all_steps(), reverse=True):
            try:
                out = read(candidate)
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
                failures.append(f"{candidate}: {_one_line(e, 100)}")
                moved = self._set_aside(candidate)
                print(f"[checkpoint] warning: checkpoint {self.directory / str(candidate)} is "
                      f"damaged ({_one_line(e, 100)}); moved it to {moved}, trying the "
                      "previous one", file=sys.stderr, flush=True)
                continue
            self.restored_step = candidate
            return out
        raise CheckpointDamaged(f"every checkpoint in {self.directory} is damaged "
                                f"({'; '.join(failures)})")

    def _set_aside(self, step: int) -> str:
        """Moves step's folder to DIR.damaged/STEP (unique name) so it is no longer a step."""
        src = os.fspath(self.directory / str(step))
        dest_dir = os.fspath(self.directory) + DAMAGED_SUFFIX
        os.makedirs(dest_dir, exist_ok=True)
        dest, k = os.path.join(dest_dir, str(step)), 1
        while os.path.exists(dest):
            dest, k = os.path.join(dest_dir, f"{step}_{k}"), k + 1
        shutil.move(src, dest)
        self._manager.reload()
        return dest

    def _check_fits(self, step: int, abstract_items: Mapping[str, Any]) -> None:
        """CheckpointMismatch naming the first tensor whose name or shape differs."""
        plain = {n: t for n, t in abstract_items.items()
                 if not isinstance(t, ocp.args.CheckpointArgs)}
        if not plain:
            return
        where = self.directory / str(step)
        for name, tree in plain.items():
            if not (where / name).is_dir():
                raise CheckpointMismatch(f"checkpoint {where} has no item {name!r}")
            # damaged metadata raises here, which the caller treats as a damaged step
            meta = ocp.StandardCheckpointHandler().metadata(where / name)
            saved_tree = getattr(meta, "tree", meta)
            saved, want = _shapes(saved_tree), _shapes(tree)
            missing = [k for k in want if k not in saved]
            extra = [k for k in saved if k not in want]
            if missing or extra:
                first = (f"tensor {missing[0]!r} is missing from the checkpoint" if missing
                         else f"the checkpoint has a tensor {extra[0]!r} the model lacks")
                raise CheckpointMismatch(
                    f"checkpoint {where} does not fit this model: {name}: {first} "
                    f"({len(missing)} missing, {len(extra)} unexpected; written with another "
                    "model config?)")
            differ = [k for k in want if None not in (saved[k], want[k]) and saved[k] != want[k]]
            if differ:
                k = differ[0]
                raise CheckpointMismatch(
                    f"checkpoint {where} does not fit this model: {name}: tensor {k!r} has "
                    f"shape {saved[k]} in the checkpoint, {want[k]} in the model "
                    f"({len(differ)} tensors differ; written with another model size?)")

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
