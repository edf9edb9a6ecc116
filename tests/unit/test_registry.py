"""sdlab.registry: lookups by name and alias, and errors that list the valid names."""

from __future__ import annotations

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry


def _reg() -> Registry[int]:
    return Registry.of("colour", [("Red", 1), ("Dark Blue", 2)], aliases=[("crimson", "Red")])


def test_lookup_is_case_and_space_insensitive() -> None:
    reg = _reg()
    assert reg.get("red") == 1
    assert reg.get("  dark   BLUE ") == 2
    assert reg.canonical("dark blue") == "Dark Blue"


def test_alias_resolves_to_canonical_entry() -> None:
    reg = _reg()
    assert reg.get("Crimson") == 1
    assert reg.canonical("crimson") == "Red"
    assert "crimson" in reg and "green" not in reg


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(InvalidRequestError, match=r"unknown colour 'green'; valid colours: Red, Dark Blue"):
        _reg().get("green")


def test_non_string_name_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        _reg().get(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("items", "aliases", "message"),
    [
        ([("a", 1), ("A", 2)], [], "duplicate"),
        ([("a", 1)], [("a", "a")], "clashes"),
        ([("a", 1)], [("b", "zzz")], "unknown"),
    ],
)
def test_bad_declarations_fail_at_construction(items, aliases, message) -> None:
    with pytest.raises(ValueError, match=message):
        Registry.of("thing", items, aliases)


def test_names_keep_registration_order_and_registry_is_iterable() -> None:
    reg = _reg()
    assert reg.names() == ("Red", "Dark Blue")
    assert list(reg) == [("Red", 1), ("Dark Blue", 2)]
    assert len(reg) == 2
