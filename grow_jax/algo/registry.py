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

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@registry.register("grow")``. Re-using a name raises."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._fns[name] = fn
            return fn

        return deco

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
