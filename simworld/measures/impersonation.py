"""Impersonation: a persona speaking as another persona (reference regex detector).

Source: docs/metrics.md §1 (impersonation); Baltaji, Hemmatian & Varshney 2024, "Persona
Inconstancy in Multi-Agent LLM Collaboration: Conformity, Confabulation, and Impersonation",
arXiv 2405.03862. Rate = hits / messages; a failed call (no message text) is excluded.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from types import MappingProxyType

from simworld.measures._common import Rate, rate_of

__all__ = [
    "DEMONYMS",
    "IMPERSONATION_WINDOW_WORDS",
    "find_impersonations",
    "impersonation_rate",
    "is_impersonation",
    "persona_descriptors",
]

IMPERSONATION_WINDOW_WORDS = 5
"""How many words after "As a/an/the" are searched for a persona descriptor."""

# Country names as persona files spell them (``nationality: Japan``) → the words a speaker
# uses to describe itself ("As a Japanese …"). Very short aliases such as "US" or "UK" are
# left out on purpose: matching is case-insensitive and "us" is an English word.
DEMONYMS = MappingProxyType(
    {
        "Afghanistan": ("Afghan",),
        "Algeria": ("Algerian",),
        "Argentina": ("Argentine", "Argentinian"),
        "Australia": ("Australian",),
        "Austria": ("Austrian",),
        "Bangladesh": ("Bangladeshi",),
        "Belgium": ("Belgian",),
        "Bolivia": ("Bolivian",),
        "Brazil": ("Brazilian",),
        "Bulgaria": ("Bulgarian",),
        "Canada": ("Canadian",),
        "Chile": ("Chilean",),
        "China": ("Chinese",),
        "Colombia": ("Colombian",),
        "Croatia": ("Croatian", "Croat"),
        "Cuba": ("Cuban",),
        "Czech Republic": ("Czech",),
        "Denmark": ("Danish", "Dane"),
        "Ecuador": ("Ecuadorian",),
        "Egypt": ("Egyptian",),
        "Ethiopia": ("Ethiopian",),
        "Finland": ("Finnish", "Finn"),
        "France": ("French", "Frenchman", "Frenchwoman"),
        "Germany": ("German",),
        "Ghana": ("Ghanaian",),
        "Greece": ("Greek",),
        "Hungary": ("Hungarian",),
        "India": ("Indian",),
        "Indonesia": ("Indonesian",),
        "Iran": ("Iranian", "Persian"),
        "Iraq": ("Iraqi",),
        "Ireland": ("Irish", "Irishman", "Irishwoman"),
        "Israel": ("Israeli",),
        "Italy": ("Italian",),
        "Japan": ("Japanese",),
        "Jordan": ("Jordanian",),
        "Kenya": ("Kenyan",),
        "Lebanon": ("Lebanese",),
        "Malaysia": ("Malaysian",),
        "Mexico": ("Mexican",),
        "Morocco": ("Moroccan",),
        "Netherlands": ("Dutch", "Dutchman", "Dutchwoman"),
        "New Zealand": ("New Zealander", "Kiwi"),
        "Nigeria": ("Nigerian",),
        "Norway": ("Norwegian",),
        "Pakistan": ("Pakistani",),
        "Peru": ("Peruvian",),
        "Philippines": ("Filipino", "Filipina", "Philippine"),
        "Poland": ("Polish", "Pole"),
        "Portugal": ("Portuguese",),
        "Romania": ("Romanian",),
        "Russia": ("Russian",),
        "Saudi Arabia": ("Saudi", "Saudi Arabian"),
        "Serbia": ("Serbian", "Serb"),
        "Singapore": ("Singaporean",),
        "South Africa": ("South African",),
        "South Korea": ("South Korean", "Korean"),
        "Spain": ("Spanish", "Spaniard"),
        "Sweden": ("Swedish", "Swede"),
        "Switzerland": ("Swiss",),
        "Taiwan": ("Taiwanese",),
        "Tanzania": ("Tanzanian",),
        "Thailand": ("Thai",),
        "Tunisia": ("Tunisian",),
        "Turkey": ("Turkish", "Turk"),
        "Uganda": ("Ugandan",),
        "Ukraine": ("Ukrainian",),
        "United Kingdom": ("British", "Briton", "Great Britain"),
        "United States": ("American", "United States of America", "USA"),
        "Venezuela": ("Venezuelan",),
        "Vietnam": ("Vietnamese",),
    }
)


_STOP = r"[^.,;:!?\n()\[\]\"“”]"
_SELF_DESCRIPTION = re.compile(
    # "As a/an/the X" opening a sentence, line, quote, bracket or markdown emphasis …
    rf"(?:^|(?<=[.!?;:\n\"“(\[*_>]))\s*as\s+(?:an?|the)\s+(?P<x>{_STOP}+)"
    # … or "Speaking as a/an/the X" anywhere.
    rf"|\bspeaking\s+as\s+(?:an?|the)\s+(?P<y>{_STOP}+)",
    re.IGNORECASE,
)


def persona_descriptors(nationality: str | None, name: str | None = None) -> frozenset[str]:
    """The words that name a persona: its country, the country's demonyms, its name.

    Args:
        nationality: Country as the persona file spells it (e.g. "Japan"); looked up in
            :data:`DEMONYMS` (case-insensitively); an unknown country contributes itself only.
        name: The persona's display name (e.g. "Aiko Tanaka").

    Returns:
        The descriptors, e.g. ``{"Japan", "Japanese", "Aiko Tanaka"}``.
    """
    out: set[str] = set()
    if nationality:
        out.add(nationality)
        for country, demonyms in DEMONYMS.items():
            if country.casefold() == nationality.casefold():
                out.update(demonyms)
    if name:
        out.add(name)
    return frozenset(out)


def find_impersonations(text: str, own: Collection[str], descriptors: Collection[str]) -> list[str]:
    """Descriptors of other personas that the speaker uses to describe itself.

    Source: docs/metrics.md §1 (impersonation, reference pattern); Baltaji et al. 2024,
    arXiv 2405.03862.

    The pattern (case-insensitive) finds self-descriptions "As a/an X …" and "As the X …"
    that open a sentence, line, quotation, bracket or markdown emphasis, and "Speaking as
    a/an/the X …" anywhere. X is the text up to the next punctuation mark, cut to
    :data:`IMPERSONATION_WINDOW_WORDS` words ("As a proud French citizen" → "proud French
    citizen"). Descriptors are matched in X as whole words, longest first, so the
    speaker's own "South Korean" is not read as a foreign "Korean". A hit is a matched
    descriptor that is not one of the speaker's own. Limitations of the reference pattern:
    a self-description without an article ("As Aiko, I …") or inside a clause ("I think,
    as a French …") is missed, and a cited saying ("As the French say, …") is a false hit;
    an LLM judge may be added on top, but this measure is always the one reported.

    Args:
        text: One message.
        own: The speaker's own descriptors (see :func:`persona_descriptors`).
        descriptors: Every persona's descriptors (the speaker's may be included).

    Returns:
        The other personas' descriptors found, in order of appearance (empty: no hit).
    """
    own_cf = {d.casefold() for d in own}
    vocab = sorted({d for d in (*descriptors, *own) if d.strip()}, key=len, reverse=True)
    if not vocab:
        return []
    alternation = "|".join(re.escape(d).replace(r"\ ", r"\s+") for d in vocab)
    names = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
    hits: list[str] = []
    for m in _SELF_DESCRIPTION.finditer(text):
        x = m.group("x") or m.group("y") or ""
        window = " ".join(x.split()[:IMPERSONATION_WINDOW_WORDS])
        for found in names.finditer(window):
            word = " ".join(found.group(0).split())
            if word.casefold() not in own_cf:
                hits.append(word)
    return hits


def is_impersonation(text: str, own: Collection[str], descriptors: Collection[str]) -> bool:
    """Whether the message is an impersonation hit (see :func:`find_impersonations`).

    Source: docs/metrics.md §1 (impersonation); Baltaji et al. 2024, arXiv 2405.03862.
    """
    return bool(find_impersonations(text, own, descriptors))


def impersonation_rate(
    messages: Iterable[tuple[str | None, Collection[str]]], descriptors: Collection[str]
) -> Rate:
    """Impersonation rate = messages with a hit / messages.

    Source: docs/metrics.md §1; Baltaji et al. 2024, arXiv 2405.03862.

    Args:
        messages: ``(text, speaker's own descriptors)`` per message; a ``None`` text (the
            call failed, no message was sent) is excluded from the denominator and counted
            in ``excluded``.
        descriptors: Every persona's descriptors.

    Returns:
        The :class:`Rate` (``.value`` is the rate).
    """
    flags: list[bool | None] = [
        None if text is None else is_impersonation(text, own, descriptors) for text, own in messages
    ]
    return rate_of(flags)
