"""A small registry of frozen entries, looked up by name or alias (case-insensitive).

Registries replace if-chains for anything extensible: model families, samplers, schedule types,
upscalers. A registry is an ordinary object (no module-level mutable state is required): modules build
their registry once from a tuple of entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sdlab.errors import InvalidRequestError

T = TypeVar("T")


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().split())


@dataclass(frozen=True)
class Registry(Generic[T]):
    """An immutable mapping from names (and aliases) to entries.

    ``kind`` names what is registered (``"sampler"``) and is used in error messages.
    """

    kind: str
    entries: tuple[tuple[str, T], ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, (name, _) in enumerate(self.entries):
            key = _norm(name)
            if key in index:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            index[key] = i
        for alias, target in self.aliases:
            key = _norm(alias)
            if key in index:
                raise ValueError(f"{self.kind} alias {alias!r} clashes with an existing name")
            if _norm(target) not in index:
                raise ValueError(f"{self.kind} alias {alias!r} points to unknown {target!r}")
            index[key] = index[_norm(target)]
        self._index.update(index)

    @classmethod
    def of(
        cls, kind: str, items: Iterable[tuple[str, T]], aliases: Iterable[tuple[str, str]] = ()
    ) -> Registry[T]:
        """Build a registry from ``(name, entry)`` pairs and ``(alias, name)`` pairs."""
        return cls(kind, tuple(items), tuple(aliases))

    def names(self) -> tuple[str, ...]:
        """Canonical names, in registration order."""
        return tuple(name for name, _ in self.entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _norm(name) in self._index

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or an alias of it; raises InvalidRequestError if unknown."""
        return self.entries[self._lookup(name)][0]

    def get(self, name: str) -> T:
        """The entry for ``name`` or an alias; raises InvalidRequestError listing valid names."""
        return self.entries[self._lookup(name)][1]

    def _lookup(self, name: str) -> int:
        idx = self._index.get(_norm(name)) if isinstance(name, str) else None
        if idx is None:
            valid = ", ".join(self.names())
            raise InvalidRequestError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
        return idx
