"""A name -> function registry with keyword-parameter checking.

Used for the advantage estimators so a config string (``config.algo.name``) and a dict of
parameters select and configure one of them, and typos fail loudly instead of silently
falling back to a default.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

REQUIRED = inspect.Parameter.empty  # marks a parameter without a default in `params()`


class Registry:
    """Functions registered by name; `call` checks keyword parameters against the signature.

    Registered functions take positional data arguments first and their configurable
    parameters as keyword-only arguments (after ``*``); only those are exposed as params.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Callable[..., Any]] = {}
        self._keys: dict[str, dict[str, str]] = {}

    def register(
        self, name: str, config_keys: dict[str, str] | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@registry.register("grow", config_keys={"gamma": "gamma"})``.

        `config_keys` maps a parameter to the run-config key (in the caller's section)
        that sets it; a parameter without one keeps its default unless set explicitly.
        Re-using a name, or naming a parameter the function does not have, raises.
        """

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._fns[name] = fn
            keys = dict(config_keys or {})
            bad = sorted(set(keys) - set(self.params(name)))
            if bad:
                raise ValueError(f"{self.kind} {name!r}: config_keys name unknown "
                                 f"parameter(s) {bad}")
            self._keys[name] = keys
            return fn

        return deco

    def config_keys(self, name: str) -> dict[str, str]:
        """Parameter -> config key of `name` (see `register`)."""
        self.get(name)
        return dict(self._keys[name])

    def context(self, name: str) -> tuple[str, ...]:
        """Required parameters of `name`: data the caller computes (e.g. gigpo's obs_keys),
        not settings."""
        return tuple(k for k, d in self.params(name).items() if d is REQUIRED)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._fns))

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._fns:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._fns[name]

    def params(self, name: str) -> dict[str, Any]:
        """Keyword-only parameters of `name` and their defaults (`REQUIRED` if none)."""
        sig = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def call(self, name: str, *args: Any, **params: Any) -> Any:
        """Calls `name` after checking that every param is known and every required one given."""
        accepted = self.params(name)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} got unknown parameter(s) {unknown}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
        missing = sorted(k for k, d in accepted.items() if d is REQUIRED and k not in params)
        if missing:
            raise ValueError(f"{self.kind} {name!r} requires parameter(s) {missing}")
        return self._fns[name](*args, **params)
