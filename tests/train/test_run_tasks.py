"""Run.tasks: env.tasks / env.eval_tasks reach every suite's make_tasks (ids, families, all)."""

import types

import pytest

from grow_jax.config_utils import base_config, resolve_config
from grow_jax.train.trainer import Run


def _tasks(eval_=False, **env):
    c = base_config()
    for k, v in env.items():
        c.env[k] = v
    return Run.tasks(types.SimpleNamespace(config=resolve_config(c)), eval_=eval_)


def test_train_and_eval_selection_per_suite():
    got = _tasks(suite="crafter", tasks=("collect_wood", "place_table"), max_steps=7)
    assert [t.task_id for t in got] == ["crafter:collect_wood", "crafter:place_table"]
    assert all(t.max_steps == 7 for t in got)
    ev = _tasks(True, suite="crafter", tasks=("collect_wood",), eval_tasks="defeat")
    assert [t.task_id for t in ev] == ["crafter:defeat_skeleton", "crafter:defeat_zombie"]
    # eval_tasks None: the training tasks
    ev = _tasks(True, suite="minecraft", tasks=("mine_block:oak_log", "kill_entity:zombie"))
    assert [t.task_id for t in ev] == ["mine_block:oak_log", "kill_entity:zombie"]
    assert len(_tasks(True, suite="minecraft", tasks="combat", eval_tasks="all")) == 823
    assert [t.task_id for t in _tasks()] == ["BabyAI-GoToRedBallNoDists-v0"]


def test_unknown_task_names_the_key():
    with pytest.raises(ValueError, match=r"^config error: 'env.eval_tasks': unknown crafter"):
        _tasks(True, suite="crafter", tasks=("collect_wood",), eval_tasks=("nope",))
    with pytest.raises(ValueError, match=r"^config error: 'env.tasks': unknown minecraft"):
        _tasks(suite="minecraft", tasks=("mine_block:oak_lg",))
