"""One Registry type for every family (models, activations, initialisers, norms, datasets, ...).

    ACTIVATIONS = Registry("activation")

    @ACTIVATIONS.register("relu", zero_centred=False)
    class ReLU(nn.Module): ...

    ACTIVATIONS.get("relu")        # the registered object
    ACTIVATIONS.create("relu")     # calls it
    ACTIVATIONS.list()             # sorted names
    ACTIVATIONS.meta("relu")       # the metadata given at registration

An unknown name raises ConfigError with the closest names ("did you mean ...") and the full list.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from trainlab.errors import ConfigError


def suggest(name: str, choices: list[str], what: str, aliases: list[str] = ()) -> str:
    """A one-line message for an unknown `name` among `choices` (aliases count for the suggestion but
    are not listed), with the closest match first."""
    close = difflib.get_close_matches(name, list(choices) + list(aliases), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} (expected one of: {', '.join(sorted(choices))})"


class Registry:
    """A named family of constructors with metadata and helpful errors."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = (), **meta: Any) -> Callable:
        """Decorator: register `obj` under `name` (default: its __name__), with aliases and metadata."""

        def decorator(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.family} {key!r} is registered twice")
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            for alias in aliases:
                self._aliases[alias] = key
            return obj

        return decorator

    def canonical(self, name: str) -> str:
        """The registered name for `name` or one of its aliases (also tried lower-case with "-" as "_");
        ConfigError if unknown."""
        for key in (name, name.strip().lower().replace("-", "_")):
            if key in self._entries:
                return key
            if key in self._aliases:
                return self._aliases[key]
        raise ConfigError(suggest(name, self.list(), self.family, list(self._aliases)))

    def get(self, name: str) -> Any:
        return self._entries[self.canonical(name)]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def meta(self, name: str) -> dict[str, Any]:
        return self._meta[self.canonical(name)]

    def list(self) -> list[str]:
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(str(name))
        except ConfigError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)
