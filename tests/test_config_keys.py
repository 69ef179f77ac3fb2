"""Every key of configs/base.py is read somewhere in grow_jax/ (a static check).

How "read" is decided, from the package's source (ast, no import): `section.key` is read
when some file has an attribute access `X.key` where X is either `<anything>.section`
(`config.rl.lr`), a name bound in that file to `<anything>.section` (`r = c.rl` ... `r.lr`)
or a name `section_cfg` / `section_config` (a parameter: `algo_cfg.gamma`), or a subscript
`X["key"]` of the same forms; a top-level key (`seed`) is read when some
file has `.seed`. Free-form sections (an empty dict in base.py) are not walked inside.
"""

from __future__ import annotations

import ast
import os

import ml_collections

from grow_jax.config_utils import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "grow_jax")


def _leaf_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg:
        value = cfg._fields[key]
        if isinstance(value, ml_collections.ConfigDict):
            if len(value):
                keys += _leaf_keys(value, f"{prefix}{key}.")
            else:
                keys.append(prefix + key)  # free-form section: the section itself is a key
        else:
            keys.append(prefix + key)
    return keys


def _section_of(node: ast.AST, aliases: dict[str, set[str]]) -> set[str]:
    """Section names `node` may denote: `x.section` or a name bound to one."""
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Name):
        named = {node.id.rsplit("_", 1)[0]} if node.id.endswith(("_cfg", "_config")) else set()
        return aliases.get(node.id, set()) | named
    return set()


def _reads_in(source: str) -> tuple[set[tuple[str, str]], set[str]]:
    """((section, key) pairs read, attribute names used) of one file."""
    tree = ast.parse(source)
    aliases: dict[str, set[str]] = {}
    for node in ast.walk(tree):  # r = c.rl ; a, e = config.agent, config.env
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))
                for t, v in pairs:
                    if isinstance(t, ast.Name) and isinstance(v, (ast.Attribute, ast.Name)):
                        section = _section_of(v, {}) if isinstance(v, ast.Name) else {v.attr}
                        aliases.setdefault(t.id, set()).update(section)  # e = env_config
        elif isinstance(node, ast.NamedExpr) and isinstance(node.value, ast.Attribute):
            aliases.setdefault(node.target.id, set()).add(node.value.attr)
    reads, attrs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attrs.add(node.attr)
            reads |= {(s, node.attr) for s in _section_of(node.value, aliases)}
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            if isinstance(node.slice.value, str):
                reads |= {(s, node.slice.value) for s in _section_of(node.value, aliases)}
    return reads, attrs


def _package_reads():
    """Static reads of every package file, plus the algo keys the estimators declare in
    their registration (`config_keys`), which grow_jax.train.rl reads by name."""
    from grow_jax.algo.advantages import ESTIMATORS

    reads = {("algo", key) for n in ESTIMATORS.names() for key in ESTIMATORS.config_keys(n).values()}
    attrs = set()
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    r, a = _reads_in(f.read())
                reads |= r
                attrs |= a
    return reads, attrs


def _is_read(key: str, reads, attrs) -> bool:
    parts = key.split(".")
    if len(parts) == 1:
        return parts[0] in attrs
    return (parts[-2], parts[-1]) in reads


def test_every_base_config_key_is_read():
    reads, attrs = _package_reads()
    keys = _leaf_keys(base_config())
    unread = [k for k in keys if not _is_read(k, reads, attrs)]
    assert not unread, f"configs/base.py keys nothing in grow_jax/ reads: {unread}"


def test_the_check_can_fail():
    """An alias-bound read counts; a key read under another section does not."""
    reads, attrs = _reads_in("r = config.rl\nx = r.lr\ny = config.eval.every\n"
                             "z = c.sft['steps']\ndef f(algo_cfg):\n    return algo_cfg.gamma")
    assert _is_read("rl.lr", reads, attrs) and _is_read("eval.every", reads, attrs)
    assert _is_read("sft.steps", reads, attrs) and _is_read("algo.gamma", reads, attrs)
    assert not _is_read("logging.every", reads, attrs) and not _is_read("rl.every", reads, attrs)
