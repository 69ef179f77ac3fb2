"""Refuse to resume a workdir with another config (docs/reliability.md).

`--mode=train` in a workdir whose newest RL checkpoint was written with a different config
would silently mix two runs (and break exact resume). `check_resume_config` compares the
config saved with that checkpoint to the current one and raises `WorkdirConfigMismatch`
naming the differing keys, unless ``config.force``. Keys in `MAY_DIFFER` never count: they
do not change what the run computes (logging, pool mode, timeouts) or only extend it
(``rl.iterations``).
"""

from __future__ import annotations

import json
import os

from grow_jax import config_utils

MAY_DIFFER = ("force", "logging", "rl.iterations", "env.pool_mode", "env.timeout_s",
              "checkpoint.async_save")


class WorkdirConfigMismatch(ValueError):
    """The workdir was created by another config."""


def _flat(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MAY_DIFFER)


def saved_run_config(workdir: str) -> tuple[str, dict] | None:
    """(checkpoint folder, config) of the newest readable RL checkpoint in WORKDIR, if any."""
    ckdir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckdir):
        return None
    for step in sorted((int(d) for d in os.listdir(ckdir) if d.isdigit()), reverse=True):
        path = os.path.join(ckdir, str(step), "extra", "metadata")
        try:
            with open(path) as f:
                extra = json.load(f)
        except (OSError, ValueError):
            continue  # unfinished or damaged: the checkpointer's fallback deals with it
        if extra.get("phase") == "rl" and "config" in extra:
            return os.path.join(ckdir, str(step)), extra["config"]
        return None
    return None


def check_resume_config(config, workdir: str, mode: str) -> None:
    """Raises WorkdirConfigMismatch if `--mode=train` would resume a run of another config."""
    if mode != "train" or config.force:
        return
    saved = saved_run_config(workdir)
    if saved is None:
        return
    where, old = saved
    new = _flat(json.loads(config_utils.config_to_json(config)))
    old = _flat(old)
    keys = sorted(k for k in set(new) | set(old) if not _ignored(k) and old.get(k) != new.get(k))
    if keys:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys[:4])
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        raise WorkdirConfigMismatch(
            f"{workdir} holds a run of another config (checkpoint {where}): {shown}{more}; "
            "use a fresh --workdir, or --config.force=True to resume with the new config")
