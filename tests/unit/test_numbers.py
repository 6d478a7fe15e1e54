"""Unit tests of ``providers.numbers.normalise`` (one mainland number, one spelling) and of
``normalise_block``, its fast form for large lists."""

from __future__ import annotations

import pytest

from smsq.providers.numbers import (
    INVALID_CHARS,
    INVALID_EMPTY,
    INVALID_MOBILE,
    INVALID_NUMBER,
    normalise,
    normalise_block,
)

MOBILE = "13800138000"
LANDLINE = "075580808080"  # 小灵通 / fixed line with area code, as in the vendor's document


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("13800138000", MOBILE, id="plain"),
        pytest.param("+8613800138000", MOBILE, id="plus-86"),
        pytest.param("+86 138 0013 8000", MOBILE, id="plus-86-spaced"),
        pytest.param("8613800138000", MOBILE, id="86-13-digits"),
        pytest.param("008613800138000", MOBILE, id="0086"),
        pytest.param("0086 13800138000", MOBILE, id="0086-spaced"),
        pytest.param(" 138 0013 8000 ", MOBILE, id="spaces"),
        pytest.param("138\t0013\t8000", MOBILE, id="tabs"),
        pytest.param("138-0013-8000", MOBILE, id="dashes"),
        pytest.param("(+86) 138-0013-8000", MOBILE, id="parentheses"),
        pytest.param("１３８００１３８０００", MOBILE, id="full-width-digits"),
        pytest.param("＋８６　１３８００１３８０００", MOBILE, id="full-width-plus-and-space"),
        pytest.param("１３８－００１３－８０００", MOBILE, id="full-width-dashes"),
        pytest.param(13800138000, MOBILE, id="int"),
        pytest.param("15912345678", "15912345678", id="prefix-15"),
        pytest.param("19912345678", "19912345678", id="prefix-19"),
    ],
)
@pytest.mark.parametrize("landline", [False, True], ids=["mobile-only", "landline-ok"])
def test_normalise_accepts(raw, expected, landline):
    assert normalise(raw, landline=landline) == (expected, None)


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(LANDLINE, LANDLINE, id="shenzhen-12-digits"),
        pytest.param("0755-8080-8080", LANDLINE, id="shenzhen-dashed"),
        pytest.param("(0755) 80808080", LANDLINE, id="shenzhen-parentheses"),
        pytest.param("01012345678", "01012345678", id="beijing-11-digits"),
    ],
)
def test_normalise_landline_only_when_allowed(raw, expected):
    assert normalise(raw, landline=True) == (expected, None)
    assert normalise(raw) == (None, INVALID_MOBILE)


@pytest.mark.parametrize(
    "raw, reason, landline_reason",
    [
        pytest.param(None, INVALID_EMPTY, INVALID_EMPTY, id="none"),
        pytest.param("", INVALID_EMPTY, INVALID_EMPTY, id="empty"),
        pytest.param("  - ", INVALID_EMPTY, INVALID_EMPTY, id="only-separators"),
        pytest.param("1380013800", INVALID_MOBILE, INVALID_NUMBER, id="too-short"),
        pytest.param("138001380001", INVALID_MOBILE, INVALID_NUMBER, id="too-long"),
        pytest.param("138", INVALID_MOBILE, INVALID_NUMBER, id="far-too-short"),
        pytest.param("1380013800a", INVALID_CHARS, INVALID_CHARS, id="letter"),
        pytest.param("abc", INVALID_CHARS, INVALID_CHARS, id="letters"),
        pytest.param("138/0013/8000", INVALID_CHARS, INVALID_CHARS, id="slashes"),
        pytest.param("+14155552671", INVALID_MOBILE, INVALID_NUMBER, id="foreign-plus-1"),
        pytest.param("+44 20 7946 0958", INVALID_MOBILE, INVALID_NUMBER, id="foreign-plus-44"),
        pytest.param("12345678901", INVALID_MOBILE, INVALID_NUMBER, id="prefix-12"),
        pytest.param("11012345678", INVALID_MOBILE, INVALID_NUMBER, id="prefix-11"),
        pytest.param("23800138000", INVALID_MOBILE, INVALID_NUMBER, id="prefix-2"),
        pytest.param("+86123456789012", INVALID_MOBILE, INVALID_NUMBER, id="plus-86-too-long"),
        pytest.param("0001380013800", INVALID_MOBILE, INVALID_NUMBER, id="leading-zeros"),
    ],
)
def test_normalise_rejects(raw, reason, landline_reason):
    assert normalise(raw) == (None, reason)
    assert normalise(raw, landline=True) == (None, landline_reason)


@pytest.mark.parametrize("reason", [INVALID_EMPTY, INVALID_CHARS, INVALID_MOBILE, INVALID_NUMBER])
def test_reasons_are_human_readable(reason):
    assert isinstance(reason, str)
    assert reason.strip() == reason and reason
    assert not reason.isupper() and not reason.isdigit()  # words, not a code


def test_reasons_say_what_is_expected():
    assert "11 digits" in INVALID_MOBILE
    assert "fixed-line" in INVALID_NUMBER
    assert INVALID_MOBILE != INVALID_NUMBER


class Digits(str):
    """A str subclass, as some libraries hand out (numpy.str_)."""


# Spellings the block's fast paths take, and near misses they must leave to normalise.
SPELLINGS = [
    "13800138000",
    "+86 138-0013-8000",
    "+86 13800138000",
    "+8613800138000",
    "0086 138 0013 8000",
    "008613800138000",
    "138-0013-8000",
    "138 0013 8000",
    "8613800138000",
    "86 138-0013-8000",
    "+86  138-0013-8000",
    "+86 138--0013-8000",
    "+86 138-0013-800",
    "+86 128-0013-8000",
    "+85 138-0013-8000",
    "+86-138-0013-8000",
    "0086-138-0013-8000",
    "(+86) 138-0013-8000",
    "+86 138\t0013\t8000",
    " 13800138000",
    "１３８００１３８０００",
    "+86 １３８-0013-8000",
    "138-0013-8000 ",
    "13800138000\n",
    "12800138000",
    LANDLINE,
    "0755-8080-8080",
    "01012345678",
    "",
    "  ",
    "n/a",
    None,
    13800138000,
    Digits("13800138000"),
]


@pytest.mark.parametrize("landline", [False, True], ids=["mobile-only", "landline-ok"])
def test_normalise_block_is_normalise_over_the_block(landline):
    valid, invalid = normalise_block(SPELLINGS, landline=landline)
    expected = [(raw, normalise(raw, landline=landline)) for raw in SPELLINGS]
    assert valid == [number for _, (number, _) in expected if number is not None]
    assert all(type(number) is str for number in valid)
    assert invalid == [(raw, reason) for raw, (number, reason) in expected if number is None]


@pytest.mark.parametrize(
    "block, expected",
    [
        pytest.param(["13800138000", "13900139000"], ["13800138000", "13900139000"], id="all-canonical"),
        pytest.param(["13800138000\n13900139000", ""], [], id="a-newline-inside-an-entry"),
        pytest.param(["13800138000\n13900139000"], [], id="two-numbers-in-one-entry"),
        pytest.param(["13800138000", Digits("13900139000")], ["13800138000", "13900139000"], id="a-str-subclass"),
        pytest.param([], [], id="empty"),
    ],
)
def test_normalise_block_of_canonical_lines(block, expected):
    valid, invalid = normalise_block(block)
    assert valid == expected and all(type(number) is str for number in valid)
    assert [raw for raw, _ in invalid] == [raw for raw in block if raw not in expected]
