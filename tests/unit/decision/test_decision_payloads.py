"""Payload templates (docs/payloads.md): parsing, rendering, defaults, types, profile data."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from tessera.decision.application.payloads import ProfileData, render_payloads
from tessera.decision.domain.campaigns import CampaignDef, CampaignStatus, CampaignVariant, Choice
from tessera.decision.domain.payloads import (
    MISSING,
    Placeholder,
    TemplateError,
    compile_payload,
    parse_template,
)
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.v1 import decision_pb2
from tessera.profiles.v1 import profiles_pb2

FIELD = "campaign.variants[0].payload.title"


def data(values: dict[tuple[str, ...], Any]) -> Any:
    return lambda root, path: values.get((root, *path), MISSING)


def render(text: str, values: dict[tuple[str, ...], Any]) -> Any:
    template = parse_template(text, FIELD)
    assert template is not None
    return template.render(data(values))


# -- parsing --------------------------------------------------------------------


def test_parse__no_braces__none_served_as_written() -> None:
    assert parse_template("Juicers for a birthday {not a placeholder}", FIELD) is None


def test_parse__placeholder_with_default__root_path_and_typed_default() -> None:
    template = parse_template('{{ traits.first_name | default: "there" }}', FIELD)

    assert template is not None
    assert template.parts == (Placeholder("traits", ("first_name",), "there"),)


@pytest.mark.parametrize(
    ("text", "default"),
    [
        ("{{features.lifetime_value|default:0}}", 0),
        ("{{features.lifetime_value | default: -2.5e1}}", -25.0),
        ("{{traits.vip | default: true}}", True),
        ("{{traits.vip | default: null}}", None),
        ('{{traits.x | default: "a \\"quoted\\" }} brace"}}', 'a "quoted" }} brace'),
    ],
)
def test_parse__default_literals__read_as_json(text: str, default: Any) -> None:
    template = parse_template(text, FIELD)

    assert template is not None
    (placeholder,) = template.parts
    assert isinstance(placeholder, Placeholder) and placeholder.default == default


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Hi {{traits.first_name", "'{{' is not closed by '}}'"),
        ("{{trait.first_name}}", "unknown root 'trait' (did you mean 'traits'?)"),
        ("{{profile.id}}", "unknown root 'profile'"),
        ("{{traits}}", "name what to read of traits"),
        ("{{traits.name | default: gifts}}", "the default must be a JSON string"),
        ('{{traits.name | default "gifts"}}', 'write the default as `default: "text"`'),
        ("{{traits.name | upper}}", "unknown filter 'upper'"),
        ('{{traits.name | default: "gifts}}', "the default's string is not closed"),
        ('{{traits.name | default: "a" "b"}}', "expected '}}', found '\"'"),
        ("{{session.cart_total}}", "unknown session value 'cart_total'"),
        ("{{session.category_views}}", "write session.category_views.<name>"),
        ("{{features.rfm.score}}", "unknown feature 'rfm.score'"),
        ("{{interests.first}}", "unknown interests value 'first'"),
        ("{{interests.0}}", "unknown interests value '0'"),
        ("{{ }}", "expected a name, found '}'"),
        ("{{traits..x}}", "expected a name after '.', found '.'"),
    ],
)
def test_parse__bad_template__invalid_argument_names_field_and_problem(
    text: str, problem: str
) -> None:
    with pytest.raises(TemplateError) as raised:
        parse_template(text, FIELD)

    assert raised.value.field == FIELD
    assert problem in raised.value.message
    assert raised.value.code_name == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("default", "problem"),
    [
        ("9" * 400, "must be a number within +-9007199254740992"),
        ("9" * 5000, "must be a number within +-9007199254740992"),  # past int()'s 4300 digits
        ("1e999", "must be a number within +-9007199254740992"),
        ("-9007199254740994", "must be a number within +-9007199254740992"),
        ('"\\ud800"', "must not contain a lone surrogate"),
        ('"a\\u0000b"', "must not contain a NUL character"),
    ],
)
def test_parse__default_a_payload_cannot_carry__invalid_argument_on_write(
    default: str, problem: str
) -> None:
    # Each once reached Decide, which could not encode it (INTERNAL on every call).
    with pytest.raises(TemplateError) as raised:
        parse_template(f"{{{{traits.x | default: {default}}}}}", FIELD)

    assert raised.value.field == FIELD
    assert problem in raised.value.message


def test_parse__default_at_the_bounds__kept() -> None:
    text = '{{traits.x | default: -9007199254740992}} {{traits.y | default: "\\ud83e\\uddc3"}}'
    template = parse_template(text, FIELD)

    assert template is not None
    assert template.render(data({})) == "-9007199254740992 \U0001f9c3"


def test_parse__error_names_the_character_of_the_placeholder() -> None:
    with pytest.raises(TemplateError, match="placeholder at character 7: unknown root 'x'"):
        parse_template("Hello {{x.y}}", FIELD)


def test_compile__nested_bad_string__error_path_reaches_it() -> None:
    payload = {"hero": {"items": [{"text": "ok"}, {"text": "{{nope.x}}"}]}}

    with pytest.raises(TemplateError) as raised:
        compile_payload(payload, "campaign.variants[1].payload")

    assert raised.value.field == "campaign.variants[1].payload.hero.items[1].text"


def test_compile__no_placeholder_anywhere__none() -> None:
    assert compile_payload({"title": "Juicers", "n": 3, "tags": ["a", {"b": "c"}]}, "p") is None


# -- rendering ------------------------------------------------------------------


def test_render__whole_placeholder__keeps_the_value_type() -> None:
    values = {("session", "page_views"): 3, ("traits", "vip"): True, ("traits", "tags"): ["a"]}

    assert render("{{session.page_views}}", values) == 3
    assert render("{{ traits.vip }}", values) == True  # noqa: E712 (a bool, not 1)
    assert render("{{traits.tags}}", values) == ["a"]


def test_render__placeholders_in_text__interpolated_as_text() -> None:
    values = {
        ("traits", "first_name"): "Ana",
        ("session", "page_views"): 3,
        ("features", "lifetime_value"): 120.0,
        ("features", "conversion_probability"): 0.25,
        ("traits", "vip"): False,
    }

    text = render(
        "{{traits.first_name}}: {{session.page_views}} pages, ltv {{features.lifetime_value}}, "
        "p {{features.conversion_probability}}, vip {{traits.vip}}",
        values,
    )

    assert text == "Ana: 3 pages, ltv 120, p 0.25, vip false"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (29.9 * 3, "89.7"),  # 89.69999999999999 as a double
        (0.1 + 0.2, "0.3"),
        (59.99999999999999, "60"),
        (1 / 3, "0.333333333333333"),
        (2.5e-7, "2.5e-07"),
    ],
)
def test_render__float_sums_in_text__read_as_written_not_as_double_noise(
    value: float, text: str
) -> None:
    # A cart of three 29.90 items read "Your cart: 89.69999999999999".
    assert render("Your cart: {{session.cart_value}}", {("session", "cart_value"): value}) == (
        f"Your cart: {text}"
    )
    # A whole-value placeholder keeps the number itself, for the channel to format.
    assert render("{{session.cart_value}}", {("session", "cart_value"): value}) == value


def test_render__missing_data__default_or_empty_string() -> None:
    assert render('{{traits.first_name | default: "there"}}', {}) == "there"
    assert render('Hi {{traits.first_name | default: "there"}}!', {}) == "Hi there!"
    assert render("Hi {{traits.first_name}}!", {}) == "Hi !"
    assert render("{{traits.first_name}}", {}) == ""
    assert render("{{session.page_views | default: 0}}", {}) == 0


def test_render__null_data__counts_as_missing() -> None:
    assert render('{{traits.first_name | default: "there"}}', {("traits", "first_name"): None}) == (
        "there"
    )


def test_render__escaped_braces__literal_braces() -> None:
    assert render("\\{{first_name}} for {{traits.a}}", {("traits", "a"): "x"}) == (
        "{{first_name}} for x"
    )
    assert render("\\{{first_name}}", {}) == "{{first_name}}"


def test_render__nested_payload__templated_strings_rendered_rest_shared() -> None:
    shared = {"size": "large"}
    payload = {
        "title": "For {{traits.first_name}}",
        "style": shared,
        "cards": [{"category": "{{interests.top}}"}, "static"],
    }
    template = compile_payload(payload, "p")
    assert template is not None

    out = template.render(data({("traits", "first_name"): "Ana", ("interests", "top"): "juicers"}))

    assert out == {
        "title": "For Ana",
        "style": {"size": "large"},
        "cards": [{"category": "juicers"}, "static"],
    }
    assert out["style"] is shared


# -- profile data -------------------------------------------------------------


def profile() -> profiles_pb2.Profile:
    message = profiles_pb2.Profile(profile_id="p1")
    message.traits.update({"first_name": "Ana", "address": {"city": "Lyon"}, "kids": ["Léa"]})
    message.session.page_views = 4
    message.session.category_views["juicers"] = 3
    message.session.searches.extend(["blender", "juicer"])
    message.session.cart.add(product_id="j1", quantity=2, price=49.5)
    message.session.channel = 1
    message.features.lifetime_value = 99.5
    message.features.rfm.recency_days = -1
    message.features.interests.add(category="juicers", score=9.0)
    message.features.interests.add(category="coffee", score=1.4)
    return message


@pytest.mark.parametrize(
    ("root", "path", "value"),
    [
        ("traits", ("first_name",), "Ana"),
        ("traits", ("address", "city"), "Lyon"),
        ("traits", ("kids", "0"), "Léa"),
        ("traits", ("kids", "1"), MISSING),
        # Indexes are ASCII digits: "²" failed Decide (int() refuses it), U+FF10 read item 0.
        ("traits", ("kids", "\u00b2"), MISSING),
        ("traits", ("kids", "\uff10"), MISSING),
        ("traits", ("last_name",), MISSING),
        ("traits", ("first_name", "x"), MISSING),
        ("context", ("page",), "home"),
        ("interests", ("top",), "juicers"),
        ("interests", ("1",), "juicers"),
        ("interests", ("2",), "coffee"),
        ("interests", ("3",), MISSING),
        ("session", ("page_views",), 4),
        ("session", ("category_views", "juicers"), 3),
        ("session", ("category_views", "coffee"), 0),
        ("session", ("cart_size",), 2),
        ("session", ("cart_value",), 99.0),
        ("session", ("searches",), 2),
        ("session", ("last_search",), "juicer"),
        ("session", ("channel",), "web"),
        ("features", ("lifetime_value",), 99.5),
        ("features", ("rfm", "recency_days"), MISSING),
        ("features", ("rfm", "frequency"), 0),
        ("features", ("interest", "coffee"), 1.4),
        ("features", ("interest", "tea"), 0.0),
    ],
)
def test_profile_data__each_root__reads_the_profile(
    root: str, path: tuple[str, ...], value: Any
) -> None:
    context = struct_pb2.Struct()
    context.update({"page": "home"})

    assert ProfileData(profile(), context)(root, path) == value


def test_render_payloads__only_templated_variants_rendered() -> None:
    templated = compile_payload({"category": "{{interests.top}}"}, "p")
    plain = CampaignDef(
        key="a",
        placements=("home",),
        variants=(CampaignVariant("t", 1.0, {"title": "a"}),),
        control_variant_key="control",
        experiment_key="campaign-a",
        status=CampaignStatus.RUNNING,
    )
    personal = CampaignDef(
        key="b",
        placements=("side",),
        variants=(CampaignVariant("t", 1.0, {"category": "{{interests.top}}"}, templated),),
        control_variant_key="control",
        experiment_key="campaign-b",
        status=CampaignStatus.RUNNING,
    )
    choices = [Choice("home", plain, "t"), Choice("side", personal, "t"), Choice("empty")]

    rendered = render_payloads(choices, profile(), struct_pb2.Struct())

    assert rendered == (None, {"category": "juicers"}, None)


def test_campaign_from_proto__stored_bad_template__served_as_written_unless_strict() -> None:
    message = decision_pb2.Campaign(key="old", placements=["home"])
    variant = message.variants.add(key="t", weight=1)
    variant.payload.update({"body": "Hello {{first_name}}"})

    served = campaign_from_proto(message)

    assert served.variants[0].template is None
    assert served.variants[0].payload == {"body": "Hello {{first_name}}"}
    with pytest.raises(TemplateError) as raised:
        campaign_from_proto(message, strict_templates=True)
    assert raised.value.field == "campaign.variants[0].payload.body"
