"""Extra-network tags: A1111 v1.10.1 parsing (extra_networks.parse_prompt + extra_networks_lora rules)."""

from __future__ import annotations

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.extra_networks import ExtraNetworkTag, parse_extra_networks, split_args, strip_extra_networks


def _one(tag: str) -> ExtraNetworkTag:
    parsed = parse_extra_networks(f"x {tag} y")
    assert parsed.text == "x  y"
    assert len(parsed.tags) == 1
    return parsed.tags[0]


@pytest.mark.parametrize(
    ("tag", "name", "te", "unet", "dyn"),
    [
        ("<lora:detail>", "detail", 1.0, 1.0, None),
        ("<lora:detail:0.8>", "detail", 0.8, 0.8, None),  # unet defaults to te
        ("<lora:detail:0.8:0.3>", "detail", 0.8, 0.3, None),
        ("<lora:detail:0.8:0.3:16>", "detail", 0.8, 0.3, 16),
        ("<lora:detail:te=0.4>", "detail", 0.4, 0.4, None),
        ("<lora:detail:unet=0.2>", "detail", 1.0, 0.2, None),
        ("<lora:detail:te=0.4:unet=0.2:dyn=8>", "detail", 0.4, 0.2, 8),
        ("<lora:detail:0.9:te=0.4>", "detail", 0.4, 0.4, None),  # unet defaults to te after te= applied
        ("<lora:detail:unet=0.5:0.7>", "detail", 0.7, 0.5, None),  # named and positional mix in any order
        ("<lora:detail:0.5:dyn=4:0.6>", "detail", 0.5, 0.6, 4),
        ("<lora:detail: 0.5 >", "detail", 0.5, 0.5, None),  # float() accepts surrounding spaces
        ("<lora:detail:-1>", "detail", -1.0, -1.0, None),
        ("<lora:detail:1e-1>", "detail", 0.1, 0.1, None),
        ("<lora: spaced name :0.5>", " spaced name ", 0.5, 0.5, None),  # names are not stripped
        ("<lora:a=b=c:0.5>", "a=b=c", 0.5, 0.5, None),  # two '=' make an item positional
        ("<lora:te=0.3:real:0.6>", "real", 0.3, 0.3, None),  # positional 0.6 is overridden by te=
        ("<lora:dir/sub name-v1.0:0.5>", "dir/sub name-v1.0", 0.5, 0.5, None),
        ("<lyco:locon:0.7:0.4>", "locon", 0.7, 0.4, None),
        ("<hypernet:hn:0.6>", "hn", 0.6, 0.6, None),
        ("<hypernet:hn>", "hn", 1.0, 1.0, None),
        ("<hypernet:a=b:0.5>", "a=b", 0.5, 0.5, None),  # hypernet reads raw items, not positional
    ],
)
def test_tag_forms(tag: str, name: str, te: float, unet: float, dyn: int | None) -> None:
    parsed = _one(tag)
    assert (parsed.name, parsed.te_multiplier, parsed.unet_multiplier, parsed.dyn_dim) == (name, te, unet, dyn)
    assert parsed.raw == tag
    assert parsed.kind == tag[1:].split(":")[0]


@pytest.mark.parametrize(
    ("tag", "words"),
    [
        ("<lora:x:abc>", "not a number"),
        ("<lora:x:0.5:zz>", "not a number"),
        ("<lora:x:te=>", "not a number"),
        ("<lora:x:1:1:2.5>", "not a whole number"),
        ("<lora:x:dyn=big>", "not a whole number"),
        ("<lora:x:nan>", "finite"),
        ("<lora:x:inf>", "finite"),
        ("<lora:te=1>", "names no network"),
        ("<hypernet:h:bad>", "not a number"),
    ],
)
def test_malformed_numbers_name_the_tag(tag: str, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words) as info:
        parse_extra_networks(f"a {tag}")
    assert tag in str(info.value)


def test_text_around_tags_is_kept_exactly() -> None:
    parsed = parse_extra_networks("a, <lora:x:1>,  b<lora:y:0.5>c <lora:z>")
    assert parsed.text == "a, ,  bc "
    assert [t.name for t in parsed.tags] == ["x", "y", "z"]


def test_unknown_kinds_are_removed_and_reported() -> None:
    parsed = parse_extra_networks("a <wildcard:thing> b <LORA:x:1> <lora:y>")
    assert parsed.text == "a  b  "
    assert parsed.unknown == ("<wildcard:thing>", "<LORA:x:1>")  # kinds are case-sensitive
    assert [t.name for t in parsed.tags] == ["y"]


def test_not_tags_stay_in_the_text() -> None:
    for prompt in ("<lora>", "<lora:>", "< lora:x>", "<lo-ra:x>", "a > b < c", "<lora:x", "<:x>"):
        parsed = parse_extra_networks(prompt)
        assert (parsed.text, parsed.tags, parsed.unknown) == (prompt, (), ())


def test_args_end_at_the_first_closing_angle_bracket() -> None:
    parsed = parse_extra_networks("<lora:x:0.5>>")
    assert parsed.text == ">" and parsed.tags[0].te_multiplier == 0.5


def test_tags_are_grouped_by_kind_in_order_of_first_appearance() -> None:
    parsed = parse_extra_networks("<lyco:a> <lora:b> <hypernet:h> <lyco:c> <lora:d>")
    assert [(t.kind, t.name) for t in parsed.tags] == [("lyco", "a"), ("lyco", "c"), ("lora", "b"), ("lora", "d"), ("hypernet", "h")]


def test_tags_from_every_and_part_are_collected() -> None:
    parsed = parse_extra_networks("cat <lora:a:0.5> AND dog <lora:b:0.25>:0.5")
    assert [t.name for t in parsed.tags] == ["a", "b"]
    assert parsed.text == "cat  AND dog :0.5"


def test_split_args_named_and_positional() -> None:
    args = split_args("n:1:te=2:te=3:a=b=c")
    assert args.items == ("n", "1", "te=2", "te=3", "a=b=c")
    assert args.positional == ("n", "1", "a=b=c")
    assert dict(args.named) == {"te": "3"}  # a later duplicate wins


def test_strip_never_raises() -> None:
    assert strip_extra_networks("a <lora:x:bad> b") == "a  b"
