"""One task-list interface for every suite: ids, families, "all", and unknown-name errors."""

import pytest

from grow_jax.envs import babyai, crafter, make_tasks, minecraft
from grow_jax.envs.base import Task, select_tasks


def _t(task_id, family):
    return Task(task_id=task_id, suite="s", family=family, instruction="")


def test_select_tasks_ids_families_all_order_and_dedup():
    tasks = [_t("a", "f1"), _t("b", "f1"), _t("c", "f2"), _t("a", "f1")]  # "a": two seeds
    assert select_tasks(tasks, ("c", "a"), "s") == [tasks[2], tasks[0], tasks[3]]
    assert select_tasks(tasks, "f1", "s") == [tasks[0], tasks[1], tasks[3]]
    assert select_tasks(tasks, ("f2", "all"), "s") == [tasks[2], tasks[0], tasks[1], tasks[3]]
    assert select_tasks(tasks, None, "s") == tasks
    with pytest.raises(ValueError, match=r"unknown s task or family 'bb'.*did you mean b"):
        select_tasks(tasks, ("a", "bb"), "s")
    with pytest.raises(ValueError, match="task selection must be"):
        select_tasks(tasks, (), "s")
    with pytest.raises(ValueError, match="task selection must be"):
        select_tasks(tasks, ("a", 3), "s")


def test_crafter_ids_by_name_task_id_and_category():
    got = [t.task_id for t in crafter.make_tasks(("collect_wood", "crafter:eat_cow"))]
    assert got == ["crafter:collect_wood", "crafter:eat_cow"]
    assert {t.task_id for t in crafter.make_tasks("defeat")} == {
        "crafter:defeat_skeleton", "crafter:defeat_zombie"}  # fmt: skip
    assert len(crafter.make_tasks("all")) == 22
    with pytest.raises(ValueError, match="did you mean crafter:collect_wood"):
        crafter.make_tasks(("crafter:collect_woood",))


def test_minecraft_ids_families_and_gui_is_craft_plus_smelt():
    (t,) = minecraft.make_tasks(("mine_block:oak_log",))
    assert t.task_id == "mine_block:oak_log"
    gui = minecraft.make_tasks("gui")
    assert {t.spawn["spawn_file"] for t in gui} == {"craft_item", "smelt_item"}
    assert {t.spawn["spawn_file"] for t in minecraft.make_tasks("embodied")} == {"mine_block"}
    assert len(minecraft.make_tasks("all")) == 823
    with pytest.raises(ValueError, match="did you mean mine_block:oak_log"):
        minecraft.make_tasks(("mine_block:oak_lg",))


def test_babyai_level_ids_and_level_group():
    (t,) = make_tasks("babyai", ids=("BabyAI-GoToRedBallNoDists-v0",))
    assert t.task_id == "BabyAI-GoToRedBallNoDists-v0" and t.family == "GoTo"
    unlock = babyai.make_tasks("Unlock")
    assert unlock and {t.family for t in unlock} == {"Unlock"}
    with pytest.raises(ValueError, match="did you mean BabyAI-GoToLocal-v0"):
        babyai.make_tasks(("BabyAI-GoToLocl-v0",))
