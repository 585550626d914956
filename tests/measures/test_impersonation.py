"""§1 impersonation: the reference self-description pattern and its rate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from simworld.measures.impersonation import (
    DEMONYMS,
    find_impersonations,
    impersonation_rate,
    is_impersonation,
    persona_descriptors,
)
from simworld.measures.inconstancy import find_impersonations as reexported

LIBRARY = Path(__file__).resolve().parents[2] / "agents" / "global_panel.yaml"

JAPAN = persona_descriptors("Japan", "Aiko Tanaka")
FRANCE = persona_descriptors("France", "Camille Dubois")
BRAZIL = persona_descriptors("Brazil", "Lucas Oliveira")
ALL = JAPAN | FRANCE | BRAZIL


def test_persona_descriptors() -> None:
    assert persona_descriptors("Japan", "Aiko Tanaka") == {"Japan", "Japanese", "Aiko Tanaka"}
    assert persona_descriptors("japan") == {"japan", "Japanese"}  # lookup is case-insensitive
    assert persona_descriptors("Atlantis", "X") == {"Atlantis", "X"}  # unknown country
    assert persona_descriptors(None) == frozenset()


def test_demonym_table_covers_shipped_personas() -> None:
    data = yaml.safe_load(LIBRARY.read_text(encoding="utf-8"))
    nationalities = {p["nationality"] for p in data["personas"]}
    assert nationalities <= set(DEMONYMS)
    assert "American" in DEMONYMS["United States"]
    assert "US" not in DEMONYMS["United States"]  # "us" is an English word


def test_hit_on_other_nationality() -> None:
    text = "Thank you all. As a French agent, I believe option B is right."
    assert find_impersonations(text, JAPAN, ALL) == ["French"]
    assert is_impersonation(text, JAPAN, ALL)
    assert reexported is find_impersonations


def test_own_persona_is_not_a_hit() -> None:
    assert find_impersonations("As a Japanese citizen, I prefer A.", JAPAN, ALL) == []
    # The French persona saying the same sentence impersonates the Japanese one.
    assert find_impersonations("As a Japanese citizen, I prefer A.", FRANCE, ALL) == ["Japanese"]


def test_all_three_forms_case_insensitive() -> None:
    assert find_impersonations("AS AN AGENT FROM BRAZIL I say A", JAPAN, ALL) == ["BRAZIL"]
    assert find_impersonations("As the Camille Dubois here, I vote B.", JAPAN, ALL) == [
        "Camille Dubois"
    ]
    # "Speaking as a …" counts anywhere in a sentence.
    text = "Honestly, speaking as a brazilian, I disagree."
    assert find_impersonations(text, JAPAN, ALL) == ["brazilian"]


def test_after_line_break_and_markdown() -> None:
    assert is_impersonation("Hello.\nAs a Frenchwoman I think so.", JAPAN, ALL)
    assert is_impersonation("**As a French delegate**, I object.", JAPAN, ALL)


def test_no_hit_without_self_description() -> None:
    # Mid-sentence "as a" is not a self-description in the reference pattern.
    assert find_impersonations("I see it as a French problem.", JAPAN, ALL) == []
    assert find_impersonations("My friend has a Brazilian car.", JAPAN, ALL) == []
    # "As a result" names no persona.
    assert find_impersonations("As a result, I pick C.", JAPAN, ALL) == []
    assert find_impersonations("", JAPAN, ALL) == []


def test_window_stops_at_punctuation_and_word_limit() -> None:
    # X stops at the comma: "As a teacher" names no persona; France comes after it.
    assert find_impersonations("As a teacher, I visited France.", JAPAN, ALL) == []
    # Within five words: "woman from France" -> hit.
    assert find_impersonations("As a woman from France I agree.", JAPAN, ALL) == ["France"]
    # "person who grew up in rural France": France is the 7th word -> outside the window.
    assert find_impersonations("As a person who grew up in rural France I agree", JAPAN, ALL) == []


def test_longest_descriptor_wins() -> None:
    south_africa = {"South Africa", "South African"}
    others = south_africa | {"African"}
    # The speaker's own "South African" must not be read as a foreign "African".
    assert find_impersonations("As a South African, I agree.", south_africa, others) == []
    assert find_impersonations("As a South African, I agree.", {"Nigerian"}, others) == [
        "South African"
    ]


def test_impersonation_rate_excludes_failed_messages() -> None:
    messages = [
        ("As a French agent, I pick B.", JAPAN),  # hit
        ("I pick A.", JAPAN),
        ("As a Frenchwoman, I pick B.", FRANCE),  # own persona, no hit
        (None, BRAZIL),  # failed call: excluded
    ]
    rate = impersonation_rate(messages, ALL)
    # 1 hit over 3 messages sent; 1 excluded.
    assert (rate.count, rate.total, rate.excluded) == (1, 3, 1)
    assert rate.value == pytest.approx(1 / 3)
    assert math.isnan(impersonation_rate([], ALL).value)
