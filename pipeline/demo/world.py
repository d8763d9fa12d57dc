"""The invented world of the demo corpus: towns, rivers, people and companies with their facts, and
one rendering of an entity's article as sections of sentences."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.demo.phrases import EN, FOREIGN, WEEKDAYS_DE
from pipeline.demo.words import (
    CODAS,
    COMPANY_KINDS,
    INDUSTRIES,
    KIND_SHARE,
    LANDMARKS,
    LINKED_FACTS,
    OCCUPATIONS,
    ONSETS,
    PRODUCTS,
    PRONOUNS,
    REGION_SUFFIXES,
    SEAS,
    TITLE_WORDS,
    TOWN_SUFFIXES,
    TRADES,
    VOWELS,
    WEEKDAYS,
    WORKS,
)


@dataclass
class Entity:
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)


def build_world(rng: random.Random, n_entities: int) -> list[Entity]:
    word = _word_maker(rng)
    regions = [word(2) + rng.choice(REGION_SUFFIXES) for _ in range(max(3, n_entities // 60))]
    counts = {kind: max(1, round(share * n_entities)) for kind, share in KIND_SHARE.items()}
    towns = [Entity("town", word(1) + rng.choice(TOWN_SUFFIXES)) for _ in range(counts["town"])]
    rivers = [Entity("river", word(2) + " River") for _ in range(counts["river"])]
    people = [Entity("person", f"{word(2)} {word(2)}") for _ in range(counts["person"])]
    companies = [
        Entity("company", f"{word(2)} {rng.choice(COMPANY_KINDS)}") for _ in range(counts["company"])
    ]
    for river in rivers:
        river.facts = {
            "region": rng.choice(regions),
            "length": str(rng.randrange(20, 900)),
            "source": word(2) + " Mountains",
            "mouth": rng.choice(SEAS),
        }
    _add_town_facts(rng, towns, rivers, people)
    for river in rivers:
        on_river = [t.name for t in towns if t.facts["river"] == river.name][:3] or [rng.choice(towns).name]
        river.facts["towns"] = (
            f"{', '.join(on_river[:-1])} and {on_river[-1]}" if len(on_river) > 1 else on_river[0]
        )
    _add_people_facts(rng, people, towns, word)
    _add_company_facts(rng, companies, people, towns)
    return [*towns, *rivers, *people, *companies]


def _word_maker(rng: random.Random) -> Callable[[int], str]:
    """``word(syllables)``: a new capitalised made-up word each call, never one given before."""
    seen: set[str] = set()

    def word(syllables: int) -> str:
        while True:
            w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))
            w = w.capitalize()
            if w not in seen:
                seen.add(w)
                return w

    return word


def _add_town_facts(
    rng: random.Random, towns: list[Entity], rivers: list[Entity], people: list[Entity]
) -> None:
    for i, town in enumerate(towns):
        river = rng.choice(rivers)
        trade = rng.choice(TRADES)
        twin = towns[(i + rng.randrange(1, len(towns))) % len(towns)] if len(towns) > 1 else town
        town.facts = {
            "region": river.facts["region"],
            "river": river.name,
            "river_short": river.name.removesuffix(" River"),
            "population": f"{rng.randrange(800, 250_000):,}",
            "founded": str(rng.randrange(900, 1900)),
            "landmark": rng.choice(LANDMARKS),
            "mayor": rng.choice(people).name,
            "market_day": rng.choice(WEEKDAYS),
            "trade": trade[0],
            "trade_de": trade[1],
            "trade_fr": trade[2],
            "trade_es": trade[3],
            "twin": twin.name,
            "twin_year": str(rng.randrange(1950, 2020)),
        }


def _add_people_facts(
    rng: random.Random, people: list[Entity], towns: list[Entity], word: Callable[[int], str]
) -> None:
    for person in people:
        occupation = rng.choice(OCCUPATIONS)
        title = " ".join(["The", *rng.sample(TITLE_WORDS, 2)])
        person.facts = {
            "occupation": occupation,
            "a_occupation": with_article(occupation),
            "birthplace": rng.choice(towns).name,
            "study_town": rng.choice(towns).name,
            "born": str(rng.randrange(1800, 2000)),
            **rng.choice(PRONOUNS),
            "known_for": WORKS.get(occupation, "the design of {title}").format(title=title),
            "prize": word(2),
            "prize_year": str(rng.randrange(1900, 2024)),
        }


def _add_company_facts(
    rng: random.Random, companies: list[Entity], people: list[Entity], towns: list[Entity]
) -> None:
    for company in companies:
        industry = rng.choice(INDUSTRIES)
        founder = rng.choice(people)
        company.facts = {
            "industry": industry,
            "a_industry": with_article(industry),
            "hq": rng.choice(towns).name,
            "founder": founder.name,
            "founded": str(rng.randrange(1820, 2015)),
            "employees": f"{rng.randrange(12, 40_000):,}",
            "product": PRODUCTS[industry],
        }


def with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def render_sections(
    rng: random.Random, entity: Entity, link: Callable[[str], str]
) -> list[tuple[str, list[str]]]:
    """One rendering of an entity's article: sections of sentences, each fact in a drawn phrasing."""
    values = {**entity.facts, "name": entity.name}
    values.update({key: link(values[key]) for key in LINKED_FACTS if key in values})
    return [
        (heading, [rng.choice(group).format(**values) for group in groups])
        for heading, groups in EN[entity.kind]
    ]


def foreign_sections(town: Entity, lang: str) -> list[tuple[str, list[str]]]:
    values = {
        **town.facts,
        "name": town.name,
        "trade": town.facts[f"trade_{lang}"],
        "market_day_de": WEEKDAYS_DE[town.facts["market_day"]],
    }
    return [("", [paragraph.format(**values) for paragraph in FOREIGN[lang]])]


# --- web pages and the WARC -----------------------------------------------------------
