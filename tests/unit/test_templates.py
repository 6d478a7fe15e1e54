"""Message templates (tasks/templates.py): what a template may hold, and each row's text."""

from __future__ import annotations

import math
from collections import OrderedDict
from decimal import Decimal

import pytest

from smsq.tasks.templates import NUMBER_COLUMNS, RowRefused, Template, TemplateError, is_number_column

SHOP = "【某某商城】{name}您好，您的订单{order}已发货"


def test_a_row_fills_each_variable():
    row = {"mobile": "13800138000", "name": "张三", "order": "8812"}
    assert Template(SHOP).render(row) == "【某某商城】张三您好，您的订单8812已发货"


def test_the_variables_are_in_order_of_first_appearance_each_once():
    template = Template("{b}{a}, {b} and {c}{a}")
    assert template.variables == ("b", "a", "c")
    assert template.render({"a": "1", "b": "2", "c": "3"}) == "21, 2 and 31"


def test_chinese_variable_names():
    template = Template("{姓名}您好，验证码{验证码}")
    assert template.variables == ("姓名", "验证码")
    assert template.render({"姓名": "李四", "验证码": "4821"}) == "李四您好，验证码4821"


def test_doubled_braces_are_literal_braces():
    template = Template("{{ok}} {name} }}{{")
    assert template.variables == ("name",)
    assert template.render({"name": "x"}) == "{ok} x }{"


def test_a_value_holding_braces_is_put_in_as_it_is():
    assert Template("hi {name}").render({"name": "{order} {0}"}) == "hi {order} {0}"


def test_a_template_of_one_variable_alone():
    assert Template("{name}").render({"name": "  张三 "}) == "张三"


def test_extra_keys_in_the_row_are_ignored():
    assert Template("hi {name}").render({"name": "a", "order": "1", "mobile": "13800138000"}) == "hi a"


def test_any_mapping_is_a_row():
    assert Template("hi {name}").render(OrderedDict(name="a")) == "hi a"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("  张三\t", "张三"),
        (8812, "8812"),
        (8812.0, "8812"),  # what a spreadsheet gives for 8812
        (13800138000.0, "13800138000"),
        (-3.0, "-3"),
        (12.5, "12.5"),
        (0, "0"),
        (0.0, "0"),
        (Decimal("19.90"), "19.90"),
    ],
)
def test_values_as_text(value, text):
    assert Template("[{v}]").render({"v": value}) == f"[{text}]"


def test_a_missing_variable_refuses_the_row():
    with pytest.raises(RowRefused, match=r"^no variable 'order' in the row$"):
        Template(SHOP).render({"name": "张三"})


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n", math.nan])
def test_an_empty_variable_refuses_the_row(value):
    with pytest.raises(RowRefused, match=r"^empty variable 'order'$"):
        Template(SHOP).render({"name": "张三", "order": value})


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_refuses_the_row(value):
    with pytest.raises(RowRefused, match=rf"^variable 'order' is {value}, not text$"):
        Template(SHOP).render({"name": "张三", "order": value})


def test_an_infinite_float_refuses_the_row():
    with pytest.raises(RowRefused, match="variable 'order' is inf"):
        Template(SHOP).render({"name": "张三", "order": math.inf})


def test_a_refused_row_is_a_value_error():
    assert issubclass(RowRefused, ValueError) and issubclass(TemplateError, ValueError)


def test_the_first_refused_variable_is_named():
    with pytest.raises(RowRefused, match="'name'"):
        Template(SHOP).render({})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hi {}", r"^template, character 4: \{\} is positional"),
        ("hi {0}", r"^template, character 4: \{0\} is positional"),
        ("{a.b}", r"^template, character 1: \{a\.b\} reaches into a value"),
        ("x{a[0]}", r"^template, character 2: \{a\[0\]\} reaches into a value"),
        ("{a:>5}", r"^template, character 1: \{a:>5\} has a format"),
        ("{a:{b}}", r"^template, character 1: \{a:\{b\}\} has a format"),
        ("{a!r}", r"^template, character 1: \{a!r\} has a format"),
        ("{ name }", r"^template, character 1: \{ name \} is not a variable name"),
        ("{a-b}", r"is not a variable name"),
        ("您好{mobile}", r"^template, character 3: \{mobile\} is the number's column"),
        ("{手机号}", r"is the number's column"),
        ("{Phone}", r"is the number's column"),
    ],
)
def test_a_field_that_is_not_a_plain_variable_is_refused_where_it_is(text, message):
    with pytest.raises(TemplateError, match=message):
        Template(text)


def test_the_character_counts_doubled_braces_as_written():
    with pytest.raises(TemplateError, match=r"^template, character 9: \{0\}"):
        Template("{{x}}{a}{0}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hi }", r"^template, character 4: '}' with no '\{' before it"),
        ("{a}}", r"^template, character 4: '}' with no '\{' before it"),
        ("{{x}} {name} {", r"^template, character 14: '\{' never closed"),
        ("{name", r"^template, character 1: '\{' never closed"),
        ("{a} {b!}", r"^template, character 5: \{b!\} is not a variable"),
    ],
)
def test_unbalanced_braces_are_refused_where_they_are(text, message):
    with pytest.raises(TemplateError, match=message):
        Template(text)


@pytest.mark.parametrize("text", ["", "【某某商城】您的订单已发货", "{{name}}"])
def test_a_text_without_a_variable_is_not_a_template(text):
    with pytest.raises(TemplateError, match=r"no variable.*use content="):
        Template(text)


def test_every_refusal_is_one_line():
    for text in ["{}", "{a.b}", "}", "{", "plain", "{mobile}", "{a!}"]:
        with pytest.raises(TemplateError) as refused:
            Template(text)
        assert "\n" not in str(refused.value)


def test_the_number_columns_in_any_ascii_case():
    assert all(is_number_column(name) for name in NUMBER_COLUMNS)
    assert is_number_column("MOBILE") and is_number_column(" Phone ") and is_number_column("手机号码")
    assert not is_number_column("name") and not is_number_column("mobile2")
