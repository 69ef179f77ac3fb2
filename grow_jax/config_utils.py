"""Run-config checking against `configs/base.py`: unknown keys and wrong types are one-line errors.

`base_config()` loads the defaults; `validate_config(config)` walks a run config and raises
`ConfigError` naming the first bad key (`config error: unknown key 'algo.gama' (did you mean
'algo.gamma'?)`, `config error: 'rl.group_size' must be int, got str`). `check_overrides(argv)`
does the same for `--config.KEY=VALUE` flags before ml_collections parses them, and
`explain_flag_error` rewords ml_collections' own multi-line parse errors into one line.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import os
import re
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference

BASE_CONFIG_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "base.py"
)


class ConfigError(ValueError):
    """A run-config problem; `str(error)` is the one-line message shown to the user."""


@functools.lru_cache(maxsize=1)
def _base_module():
    if not os.path.isfile(BASE_CONFIG_FILE):
        raise ConfigError(
            f"config error: default config {BASE_CONFIG_FILE} not found "
            "(configs/ ships with the source tree; install grow_jax editable)"
        )
    spec = importlib.util.spec_from_file_location("grow_jax_configs_base", BASE_CONFIG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config() -> ml_collections.ConfigDict:
    """A fresh copy of the defaults in configs/base.py (start every config file from it)."""
    return _base_module().get_config()


def _type_name(t: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple"}.get(
        t, getattr(t, "__name__", str(t))
    )


def _fields(cfg: ml_collections.ConfigDict) -> Iterator[tuple[str, Any]]:
    """(key, raw value) pairs; placeholders and references stay FieldReference objects."""
    for key in cfg:
        yield key, cfg._fields[key]


def _flat_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in _fields(cfg):
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
    return keys


def _unknown(path: str, reference: ml_collections.ConfigDict) -> ConfigError:
    candidates = _flat_keys(reference)
    close = difflib.get_close_matches(path, candidates, n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"config error: unknown key '{path}'{hint}")


def _expected_type(ref: Any) -> tuple[type | None, bool]:
    """(type, optional) of a base field; type None means unconstrained."""
    if isinstance(ref, FieldReference):
        if ref.get_type() is object:  # a field of several types, checked where it is used
            return None, True
        value = ref.get()
        return (ref.get_type(), value is None) if value is None else (type(value), False)
    if ref is None:
        return None, True
    return type(ref), False


def _type_ok(value: Any, expected: type) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected is float:
        return isinstance(value, (int, float))
    if expected in (tuple, list):
        return isinstance(value, (tuple, list))
    return isinstance(value, expected)


def validate_config(
    config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict | None = None
) -> None:
    """Raises ConfigError for the first key of ``config`` that base.py lacks or mistypes.

    Sections that are empty dicts in the reference are free-form and not checked inside.
    Keys the config omits keep their defaults (see `resolve_config`).
    """
    reference = base_config() if reference is None else reference
    _validate(config, reference, "", reference)


def _validate(config, reference, prefix: str, root) -> None:
    for key, raw in _fields(config):
        path = prefix + key
        if key not in reference:
            raise _unknown(path, root)
        ref = reference._fields[key]
        value = raw.get() if isinstance(raw, FieldReference) else raw
        if isinstance(ref, ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise ConfigError(
                    f"config error: '{path}' must be a section (dict), got {type(value).__name__}"
                )
            if len(ref):
                _validate(
                    ml_collections.ConfigDict(value) if isinstance(value, dict) else value,
                    ref,
                    f"{path}.",
                    root,
                )
            continue
        if isinstance(ref, FieldReference) and ref.get_type() is object:
            _check_str_or_strs(path, value, optional=ref.get() is None)
            continue
        expected, optional = _expected_type(ref)
        if expected is None or (value is None and optional):
            continue
        if not _type_ok(value, expected):
            got = "None" if value is None else type(value).__name__
            raise ConfigError(f"config error: '{path}' must be {_type_name(expected)}, got {got}")
        if expected in (tuple, list):
            _check_elements(path, value, ref.get() if isinstance(ref, FieldReference) else ref)


def _check_str_or_strs(path: str, value: Any, optional: bool) -> None:
    """A field typed `FieldReference(..., field_type=object)` in base.py: one string or a
    tuple of strings (a task selection), or None where the default is None."""
    if isinstance(value, str) or (value is None and optional):
        return
    if not isinstance(value, (tuple, list)):
        got = "None" if value is None else type(value).__name__
        raise ConfigError(f"config error: '{path}' must be str or tuple of str, got {got}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(
                f"config error: '{path}[{i}]' must be str, got {type(item).__name__}"
            )


def _check_elements(path: str, value: Sequence[Any], ref: Sequence[Any] | None) -> None:
    if not ref:
        return
    elem = type(ref[0])
    for i, item in enumerate(value):
        if not _type_ok(item, elem):
            raise ConfigError(
                f"config error: '{path}[{i}]' must be {_type_name(elem)}, got {type(item).__name__}"
            )


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates ``config`` and returns base.py's defaults overlaid with its values."""
    reference = base_config()
    validate_config(config, reference)
    resolved = base_config()
    _overlay(resolved, config)
    return resolved


def _overlay(dst: ml_collections.ConfigDict, src: ml_collections.ConfigDict) -> None:
    for key, raw in _fields(src):
        value = raw.get() if isinstance(raw, FieldReference) else raw
        target = dst._fields[key]
        if isinstance(target, ml_collections.ConfigDict) and len(target):
            _overlay(
                target,
                value
                if isinstance(value, ml_collections.ConfigDict)
                else ml_collections.ConfigDict(value),
            )
        elif isinstance(target, ml_collections.ConfigDict):  # free-form section: take it whole
            with dst.ignore_type():
                dst[key] = ml_collections.ConfigDict(value)
        else:
            with dst.ignore_type():
                dst[key] = value


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as pretty JSON (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(=.*)?$")


def check_overrides(argv: Sequence[str]) -> None:
    """Raises ConfigError for a ``--config.KEY[=VALUE]`` flag whose KEY base.py lacks."""
    reference = base_config()
    for arg in argv[1:]:
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        path = match.group(1)
        node: Any = reference
        for i, part in enumerate(path.split(".")):
            if (
                node is not reference
                and isinstance(node, ml_collections.ConfigDict)
                and not len(node)
            ):
                section = ".".join(path.split(".")[:i])
                raise ConfigError(
                    f"config error: '{path}' cannot be set on the command line: "
                    f"'{section}' is a free-form section, set it in the config file"
                )
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise _unknown(path, reference)
            node = node._fields[part]


def _lookup(reference: ml_collections.ConfigDict, path: str) -> Any:
    """The raw base field at a dotted path, or None."""
    node: Any = reference
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node._fields[part]
    return node


_FLAG_VALUE = re.compile(r"flag --config\.([A-Za-z0-9_.]+)=(.*?): (.*)$", re.DOTALL)
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+), in get_config\s*\n\s*(.*)')
_CAST = re.compile(
    r"Could not override field '(\w+)'.*? is of original type <class '(\w+)'> "
    r"and cannot be casted to type <class '(\w+)'>",
    re.DOTALL,
)


def explain_flag_error(error: BaseException) -> str:
    """One-line wording of an exception raised while absl/ml_collections parsed the flags."""
    text = str(error).strip()
    match = _FLAG_VALUE.match(text)
    if match:
        key, value = match.group(1), match.group(2)
        expected, _ = _expected_type(_lookup(base_config(), key))
        if expected is not None:
            return f"config error: '{key}' must be {_type_name(expected)}, got {value!r}"
        return f"config error: bad value for '{key}': {value!r}"
    where = _FILE_LINE.findall(text) or [
        (f.filename, str(f.lineno), f.line or "")
        for f in traceback.extract_tb(error.__traceback__)
        if f.name == "get_config"
    ]
    if where:  # an exception inside a config file's get_config(): point at the line
        path, line, source = where[-1]
        cast = _CAST.search(text)
        if cast:
            field, got, want = cast.groups()
            detail = f"field '{field}' must be {want}, got {got}"
        elif not _FILE_LINE.search(text):  # the exception itself, raised by get_config()
            detail = f"{type(error).__name__}: {' '.join(text.split())}"
        else:  # ml_collections' wrapped traceback: its last line is the exception
            detail = text.splitlines()[-1]
        return f"config error: {path}:{line}: {source.strip()}: {detail}"
    cause = error.__cause__ or error.__context__
    detail = " ".join((str(cause) if cause and not text else text).split())
    return f"config error: {detail}"
