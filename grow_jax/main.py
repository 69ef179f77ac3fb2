"""grow_jax command line.

    python -m grow_jax.main --config=configs/NAME.py --workdir=DIR --mode=MODE [--config.KEY=V ...]

Modes (`MODES`): train, sft, eval (implemented in grow_jax.train.trainer / grow_jax.eval and
imported only when used), import_hf (a local HF Qwen2-VL folder -> orbax checkpoint at step 0
in DIR) and export_hf (latest checkpoint in DIR -> a folder transformers loads). Every mode
first checks the config against configs/base.py and writes the resolved config to
DIR/config.json. Config mistakes exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from grow_jax import config_utils, preflight
from grow_jax import workdir as workdir_guard
from grow_jax.errors import RunError
from grow_jax.io_utils import atomic_write

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Run config file with a get_config() function (default: configs/base.py).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, config.json.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "sft", "eval", "export_hf", "import_hf"], "What to run."
)
_HF_DIR = flags.DEFINE_string(
    "hf_dir", None, "import_hf: local HF Qwen2-VL folder (default: config.model.hf_dir)."
)
_HF_OUT = flags.DEFINE_string("hf_out", None, "export_hf: output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "export_hf: replace a non-empty --hf_out.")
_DISTRIBUTED = flags.DEFINE_string(
    "distributed", None, "Multi-process run (grow_jax.distributed): 'auto' (Cloud TPU, SLURM), "
    "HOST:PORT of the coordinator, or 'none' (default: $GROW_JAX_COORDINATOR, else none)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed=HOST:PORT.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed=HOST:PORT.")

CHECKPOINT_DIR = "checkpoints"
HF_ASSETS_DIR = "hf_assets"  # tokenizer/processor files of an imported HF folder, for export


class UsageError(Exception):
    """A user mistake reported as one line (exit status 2)."""


def _die(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- helpers
def _checkpointer(config, workdir: str):
    from grow_jax.train.checkpoint import Checkpointer

    return Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR),
        max_to_keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )


# ----------------------------------------------------------------------------- modes
def import_hf(config, workdir: str, flag_values) -> None:
    """--hf_dir (or config.model.hf_dir) -> orbax checkpoint at step 0 in WORKDIR."""
    from flax import nnx

    from grow_jax.models import hf_io
    from grow_jax.train import builders

    hf_dir = flag_values.hf_dir or config.model.hf_dir
    if not hf_dir:
        raise UsageError("import_hf needs --hf_dir=FOLDER (or config.model.hf_dir)")
    ckpt = _checkpointer(config, workdir)
    if ckpt.latest_step() is not None:
        raise UsageError(
            f"import_hf: {ckpt.directory} already holds checkpoints "
            f"(latest step {ckpt.latest_step()}); use a fresh --workdir"
        )
    model = hf_io.load_pretrained(
        hf_dir,
        mesh=builders.make_mesh(config),
        dtype=config.model.dtype,
        param_dtype=config.model.param_dtype,
    )
    assets = os.path.join(workdir, HF_ASSETS_DIR)
    os.makedirs(assets, exist_ok=True)
    for name in hf_io.ASSET_FILES:
        if os.path.isfile(os.path.join(hf_dir, name)):
            shutil.copy2(os.path.join(hf_dir, name), os.path.join(assets, name))
    extra = {
        "iteration": 0,
        "phase": "import_hf",
        "source_hf_dir": os.path.abspath(hf_dir),
        "model_config": hf_io.model_config_to_json(model.config),
        "config": json.loads(config_utils.config_to_json(config)),
    }
    ckpt.save(
        0, {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}, extra_json=extra, force=True
    )
    ckpt.close()
    print(f"imported {hf_dir} -> {ckpt.directory}/0")


def export_hf(config, workdir: str, flag_values) -> None:
    """Latest checkpoint in WORKDIR -> --hf_out, loadable by transformers."""
    import jax
    from flax import nnx

    from grow_jax import sharding
    from grow_jax.models import hf_io
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.train import builders

    if not flag_values.hf_out:
        raise UsageError("export_hf needs --hf_out=FOLDER")
    ckpt = _checkpointer(config, workdir)
    step = ckpt.latest_step()
    if step is None:
        raise UsageError(f"export_hf: no checkpoint in {ckpt.directory}")
    extra = ckpt.read_extra(step) or {}
    if "model_config" not in extra:
        raise UsageError(
            f"export_hf: checkpoint {ckpt.directory}/{step} has no model_config "
            "metadata (not written by grow_jax import_hf/train)"
        )
    model_config = hf_io.model_config_from_json(extra["model_config"])
    mesh = builders.make_mesh(config)
    abstract = nnx.eval_shape(lambda: Qwen2VL(model_config, rngs=nnx.Rngs(0)))
    abs_params = nnx.state(abstract, nnx.Param)
    shardings = nnx.to_pure_dict(sharding.state_shardings(abs_params, mesh))
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nnx.to_pure_dict(abs_params),
        shardings,
    )
    params = ckpt.restore({"params": target}, step=step)["params"]
    ckpt.close()
    assets = os.path.join(workdir, HF_ASSETS_DIR)
    # Tokenizer to ship: explicit > the imported HF folder's > the run's hf_dir > bundled.
    tokenizer_dir = (
        config.model.tokenizer_dir
        or (assets if os.path.isdir(assets) else None)
        or config.model.hf_dir
    )
    # A weights-only import (no tokenizer files) still exports its weights and config.
    with_tokenizer = bool(
        config.model.tokenizer_dir or tokenizer_dir is None or hf_io.has_tokenizer(tokenizer_dir)
    )
    if not with_tokenizer:
        print(
            f"warning: {tokenizer_dir} has no tokenizer.json or vocab.json: exporting weights "
            "and config without a tokenizer (add one, or set --config.model.tokenizer_dir)",
            file=sys.stderr,
        )
    out = hf_io.save_pretrained(
        params,
        flag_values.hf_out,
        config=model_config,
        tokenizer_dir=tokenizer_dir,
        overwrite=flag_values.overwrite,
        with_tokenizer=with_tokenizer,
    )
    print(f"exported {ckpt.directory}/{step} -> {out}")


def _delegate(module: str, function: str) -> Callable[[Any, str, Any], None]:
    """A mode implemented elsewhere, imported only when it runs."""

    def run(config, workdir: str, flag_values) -> None:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                raise UsageError(
                    f"mode '{flag_values.mode}' needs {module}, which is not "
                    "available in this build"
                ) from e
            raise
        fn = getattr(mod, function, None)
        if fn is None:
            raise UsageError(
                f"mode '{flag_values.mode}' needs {module}.{function}, which is not "
                "available in this build"
            )
        fn(config, workdir)

    return run


MODES: dict[str, Callable[[Any, str, Any], None]] = {
    "train": _delegate("grow_jax.train.trainer", "run_train"),
    "sft": _delegate("grow_jax.train.trainer", "run_sft"),
    "eval": _delegate("grow_jax.eval.evaluate", "run_eval"),
    "import_hf": import_hf,
    "export_hf": export_hf,
}


# ----------------------------------------------------------------------------- entry
def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with config mistakes reworded to one line."""
    if not any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
        argv = [argv[0], f"--config={config_utils.BASE_CONFIG_FILE}", *argv[1:]]
    try:
        config_utils.check_overrides(argv)
        return flags.FLAGS(argv)
    except config_utils.ConfigError as e:
        _die(str(e))
    except Exception as e:  # noqa: BLE001 - flag parsing runs the user's config file
        _die(config_utils.explain_flag_error(e))
    raise AssertionError("unreachable")


def main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/absl INFO chatter only on request
    if len(argv) > 1:
        _die(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _WORKDIR.value:
        _die("--workdir is required")
    from grow_jax import distributed

    try:  # before anything touches a device
        distributed.initialize(_DISTRIBUTED.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        _die(f"error: {e}")
    try:
        config = config_utils.resolve_config(_CONFIG.value)
    except config_utils.ConfigError as e:
        _die(str(e))
    except OSError as e:  # ml_collections defers a config file load failure to first use
        reason = re.findall(r"\[Errno \d+\] (.*)", str(e))
        _die(
            f"config error: cannot load --config: {reason[-1] if reason else ' '.join(str(e).split())}"
        )
    workdir = os.path.abspath(_WORKDIR.value)
    try:  # before config.json is rewritten: a refused workdir is left as it was
        preflight.check(config, _MODE.value, workdir)
        workdir_guard.check_resume_config(config, workdir, _MODE.value)
    except (preflight.PreflightError, workdir_guard.WorkdirConfigMismatch) as e:
        _die(f"error: {e}")
    except config_utils.ConfigError as e:
        _die(str(e))
    os.makedirs(workdir, exist_ok=True)
    if distributed.is_primary():  # atomic: other processes may be reading it (resume check)
        atomic_write(os.path.join(workdir, "config.json"),
                     config_utils.config_to_json(config) + "\n")
    try:
        MODES[_MODE.value](config, workdir, flags.FLAGS)
    except UsageError as e:
        _die(f"error: {e}")
    except RunError as e:  # a damaged/mismatched checkpoint, NaN or env-fault stop: one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except config_utils.ConfigError as e:  # found once the run looks at its workdir/data
        _die(str(e))
    except (OSError, ValueError) as e:
        if _MODE.value not in ("import_hf", "export_hf"):
            raise
        _die(f"error: {e}")  # a bad HF folder or output path: the message names it


def run() -> None:
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
