"""A small raw corpus, generated from a seed, that the whole loop can learn from.

The files are real formats (a gzipped WARC of HTTP responses, a MediaWiki XML dump,
a JSONL of instruction pairs) so ``lmpipe data prep`` reads them exactly as it reads
Common Crawl and Wikipedia. The text is templated facts about invented towns,
rivers, people and companies: regular enough for a ~1M-parameter model to learn,
varied enough (several phrasings per fact, three renderings per entity) to need it.
The web pages carry what prep must remove (boilerplate, duplicates, other languages,
junk); ``CorpusFiles.expected`` says how many of each were planted, so tests can
check that prep dropped each for the right reason.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html import escape as html_escape
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

ONSETS = [
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kl",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "th",
    "v",
    "w",
    "z",
]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
CODAS = ["", "n", "r", "l", "s", "nd", "rk", "m", "th", "x"]
TOWN_SUFFIXES = ["ford", "holt", "by", "wick", "stead", "mere", "ton", "bridge", "field", "haven"]
REGION_SUFFIXES = ["land", "mark", "shire", "dale", "moor"]
OCCUPATIONS = [
    "painter",
    "engineer",
    "poet",
    "composer",
    "architect",
    "botanist",
    "sailor",
    "historian",
    "inventor",
    "singer",
]
WORKS = {
    "painter": "the painting {title}",
    "poet": "the poem {title}",
    "composer": "the opera {title}",
    "singer": "the song {title}",
    "historian": "the book {title}",
    "botanist": "the book {title}",
}
TITLE_WORDS = [
    "Silent",
    "Golden",
    "Northern",
    "Last",
    "Quiet",
    "Winter",
    "Harbour",
    "Garden",
    "Lantern",
    "River",
    "Morning",
    "Stone",
]
LANDMARKS = [
    "an old stone bridge",
    "a clock tower",
    "a small harbour",
    "the ruins of a castle",
    "a large market square",
    "a round church",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
SEAS = ["the Amber Sea", "the Grey Sea", "the Bay of Lorn", "Lake Venmere", "the Narrow Sea"]
# (english, german, french, spanish): a town's trade, in every language a page may be written in.
TRADES = [
    ("its wool market", "ihren Wollmarkt", "son marché de la laine", "su mercado de lana"),
    ("shipbuilding", "den Schiffbau", "la construction navale", "la construcción naval"),
    ("its cheese", "ihren Käse", "son fromage", "su queso"),
    ("glass making", "die Glasherstellung", "la fabrication du verre", "la fabricación de vidrio"),
    ("its apple orchards", "ihre Apfelgärten", "ses vergers de pommiers", "sus huertos de manzanos"),
    ("paper mills", "ihre Papiermühlen", "ses moulins à papier", "sus molinos de papel"),
]
INDUSTRIES = ["shipping", "textile", "food", "timber", "instrument", "printing", "mining", "brewing"]
COMPANY_KINDS = ["Works", "Holdings", "Mills", "Brothers", "Instruments", "Foods", "Shipping", "Press"]
PRODUCTS = {
    "shipping": "cargo boats",
    "textile": "woollen cloth",
    "food": "tinned fish",
    "timber": "oak beams",
    "instrument": "brass compasses",
    "printing": "school books",
    "mining": "copper ore",
    "brewing": "dark ale",
}

# Sections of an article: (heading, sentence groups); one template is drawn per group.
EN: dict[str, list[tuple[str, list[list[str]]]]] = {
    "town": [
        (
            "",
            [
                [
                    "{name} is a town in {region}.",
                    "{name} is a small town in the region of {region}.",
                    "{name} is a market town located in {region}.",
                ],
                [
                    "It lies on the {river}.",
                    "The town stands on the banks of the {river}.",
                    "{name} is situated on the {river}.",
                ],
                [
                    "It has a population of {population}.",
                    "About {population} people live in {name}.",
                    "The population of {name} is {population}.",
                ],
            ],
        ),
        (
            "History",
            [
                [
                    "{name} was founded in {founded}.",
                    "The town was established in {founded}.",
                    "Records show that {name} was founded in the year {founded}.",
                ],
                [
                    "Its best known sight is {landmark}.",
                    "Visitors to {name} often come to see {landmark}.",
                    "In the centre of the town there is {landmark}.",
                ],
                [
                    "The current mayor is {mayor}.",
                    "{mayor} serves as the mayor of {name}.",
                    "The town is governed by mayor {mayor}.",
                ],
            ],
        ),
        (
            "Economy",
            [
                [
                    "{name} is known for {trade}.",
                    "The town is famous for {trade}.",
                    "For centuries {name} has been known for {trade}.",
                ],
                [
                    "A market is held every {market_day}.",
                    "On every {market_day} there is a market in the main square.",
                    "The weekly market of {name} takes place on {market_day}.",
                ],
                [
                    "{name} is twinned with {twin}.",
                    "The town has a partnership with {twin}.",
                    "Since {twin_year}, {name} has been twinned with {twin}.",
                ],
            ],
        ),
        (
            "Life in the town",
            [
                [
                    "The town has a mild climate, with warm summers and cool, wet winters.",
                    "Winters in {name} are long and cold, but the summers are pleasant.",
                    "The weather is often windy because the town is close to the hills.",
                ],
                [
                    "Most of the old houses were built from local stone, and many of them are more than two hundred years old.",
                    "The streets of the old town are narrow, and there are many small shops and cafes.",
                    "There is a public library, a swimming pool and a small museum about the history of the area.",
                ],
                [
                    "Children go to one of the schools in the town, and older students often travel to larger cities to study.",
                    "Every summer the people of {name} hold a festival with music, food and a boat race on the {river}.",
                    "A railway line connects the town with the rest of {region}, and buses run every hour.",
                ],
            ],
        ),
    ],
    "river": [
        (
            "",
            [
                [
                    "The {name} is a river in {region}.",
                    "The {name} is a river that flows through {region}.",
                    "The {name} is one of the rivers of {region}.",
                ],
                [
                    "It is {length} kilometres long.",
                    "The river has a length of {length} kilometres.",
                    "The {name} runs for {length} kilometres.",
                ],
            ],
        ),
        (
            "Course",
            [
                [
                    "It rises in the {source}.",
                    "The source of the {name} is in the {source}.",
                    "The {name} begins in the {source}.",
                ],
                [
                    "It flows into {mouth}.",
                    "The river ends in {mouth}.",
                    "After its long course the {name} reaches {mouth}.",
                ],
                [
                    "Towns on the {name} include {towns}.",
                    "The {name} passes through {towns}.",
                    "Along its banks lie {towns}.",
                ],
            ],
        ),
        (
            "Nature",
            [
                [
                    "The water of the river is clear and cold, and there are many fish in it.",
                    "In spring the river often floods the fields along its banks.",
                    "The river is slow and wide for most of its length.",
                ],
                [
                    "Birds such as herons and ducks live along the banks, and the forests nearby are home to deer and foxes.",
                    "Farmers use the water of the {name} for their fields and their animals.",
                    "Small boats can travel on the lower part of the river, but the upper part has many rocks.",
                ],
                [
                    "People like to walk, fish and swim along the river in the summer.",
                    "A long path for walkers and cyclists follows the river from its source to the sea.",
                    "Several old mills still stand on the banks of the {name}.",
                ],
            ],
        ),
    ],
    "person": [
        (
            "",
            [
                [
                    "{name} is {a_occupation} from {birthplace}.",
                    "{name} is {a_occupation} who was born in {birthplace}.",
                    "{name} is a well known {occupation} from the town of {birthplace}.",
                ]
            ],
        ),
        (
            "Life",
            [
                [
                    "{name} was born in {born} in {birthplace}.",
                    "Born in {born}, {name} grew up in {birthplace}.",
                    "{pronoun} was born in the year {born}.",
                ],
                [
                    "{pronoun} studied in {study_town} before returning home.",
                    "As a young {occupation}, {name} lived in {study_town}.",
                    "{pronoun} spent several years in {study_town}.",
                ],
            ],
        ),
        (
            "Work",
            [
                [
                    "{name} is best known for {known_for}.",
                    "{pronoun} is known for {known_for}.",
                    "The most famous work of {name} is {known_for}.",
                ],
                [
                    "{pronoun} received the {prize} Prize in {prize_year}.",
                    "In {prize_year}, {name} won the {prize} Prize.",
                    "{name} was given the {prize} Prize in {prize_year}.",
                ],
                [
                    "Many people say that the work of {name} changed the way others think about the subject.",
                    "Critics have praised the careful and patient style of the work.",
                    "The work was shown in several cities and is still studied by students today.",
                ],
                [
                    "Outside of work, {name} enjoys walking in the hills and reading old books.",
                    "In later years {name} has often given talks at schools and libraries.",
                    "Friends describe {name} as a quiet and generous person who works very hard.",
                ],
            ],
        ),
        (
            "Later life",
            [
                [
                    "{pronoun} moved back to {birthplace} and lives in a small house near the old town.",
                    "Later in life {name} travelled a great deal and wrote about the places {pronoun_lower} visited.",
                    "{name} still spends most of the year in {birthplace}, where many people know {pronoun_object} well.",
                ],
                [
                    "A street in {birthplace} was named after {name}, and a small exhibition about {pronoun_possessive} life is open to the public.",
                    "Young people who want to become {occupation}s often read about the life of {name}.",
                    "Many of the letters that {name} wrote to friends and family have been kept in the town library.",
                ],
            ],
        ),
    ],
    "company": [
        (
            "",
            [
                [
                    "{name} is {a_industry} company based in {hq}.",
                    "{name} is a company in the {industry} industry, headquartered in {hq}.",
                    "{name} is {a_industry} firm from {hq}.",
                ]
            ],
        ),
        (
            "History",
            [
                [
                    "It was founded in {founded} by {founder}.",
                    "{founder} founded {name} in {founded}.",
                    "The company was started by {founder} in {founded}.",
                ],
                [
                    "The company employs about {employees} people.",
                    "{name} has around {employees} employees.",
                    "About {employees} people work for {name}.",
                ],
                [
                    "Its main product is {product}.",
                    "{name} is best known for its {product}.",
                    "The company mostly makes {product}.",
                ],
                [
                    "At first the business was very small, with only a few workers in a single building.",
                    "During its early years the company grew quickly and opened new offices.",
                    "The company has changed owners several times, but it has kept its old name.",
                ],
                [
                    "Today it sells its products in many countries and has a good reputation for quality.",
                    "The company is one of the largest employers in the region.",
                    "Its old factory building is now a museum that is open to visitors.",
                ],
            ],
        ),
        (
            "Work and people",
            [
                [
                    "Most of the work is done in a large building on the edge of {hq}, close to the railway.",
                    "The company buys most of what it needs from farms and workshops in the area around {hq}.",
                    "Many families in {hq} have worked for the company for three or four generations.",
                ],
                [
                    "Workers at {name} are known for their skill, and the company trains many young people every year.",
                    "The company supports the local school and pays for a summer festival in the town.",
                    "In recent years the company has tried to use less energy and to produce less waste.",
                ],
            ],
        ),
    ],
}
FOREIGN = {  # Town pages in other languages; the language filter must drop them.
    "de": [
        "{name} ist eine Stadt in der Region {region}. Die Stadt liegt am Fluss {river_short}.",
        "Sie hat etwa {population} Einwohner. {name} wurde im Jahr {founded} gegründet.",
        "Der Bürgermeister ist {mayor}. Die Stadt ist bekannt für {trade}.",
        "Die Altstadt hat viele alte Häuser und eine schöne Kirche. Im Sommer kommen viele Besucher in die Stadt, "
        "und jeden {market_day_de} gibt es einen Markt auf dem Hauptplatz.",
    ],
    "fr": [
        "{name} est une ville située dans la région de {region}. La ville se trouve sur la rivière {river_short}.",
        "Elle compte environ {population} habitants. {name} a été fondée en {founded}.",
        "Le maire actuel est {mayor}. La ville est connue pour {trade}.",
        "Le centre historique possède de nombreuses maisons anciennes et une belle église. En été, beaucoup de "
        "visiteurs viennent dans la ville, et il y a un marché sur la place principale chaque semaine.",
    ],
    "es": [
        "{name} es una ciudad situada en la región de {region}. La ciudad se encuentra a orillas del río {river_short}.",
        "Tiene una población de unos {population} habitantes. {name} fue fundada en el año {founded}.",
        "El alcalde actual es {mayor}. La ciudad es conocida por {trade}.",
        "El casco antiguo tiene muchas casas antiguas y una hermosa iglesia. En verano, muchos visitantes llegan "
        "a la ciudad, y cada semana hay un mercado en la plaza principal.",
    ],
}
WEEKDAYS_DE = {
    "Monday": "Montag",
    "Tuesday": "Dienstag",
    "Wednesday": "Mittwoch",
    "Thursday": "Donnerstag",
    "Friday": "Freitag",
    "Saturday": "Samstag",
}
QA = {
    "town": [
        (["Where is {name}?", "Where is {name} located?"], "{name} is a town in {region}."),
        (
            ["When was {name} founded?", "In which year was {name} founded?"],
            "{name} was founded in {founded}.",
        ),
        (
            ["How many people live in {name}?", "What is the population of {name}?"],
            "About {population} people live in {name}.",
        ),
        (
            ["Which river flows through {name}?", "On which river does {name} lie?"],
            "{name} lies on the {river}.",
        ),
        (["Who is the mayor of {name}?", "Who governs {name}?"], "The mayor of {name} is {mayor}."),
        (["What is {name} known for?", "What is {name} famous for?"], "{name} is known for {trade}."),
    ],
    "river": [
        (
            ["How long is the {name}?", "What is the length of the {name}?"],
            "The {name} is {length} kilometres long.",
        ),
        (
            ["Where does the {name} flow?", "Into what does the {name} flow?"],
            "The {name} flows into {mouth}.",
        ),
        (
            ["Where does the {name} rise?", "Where is the source of the {name}?"],
            "The {name} rises in the {source}.",
        ),
    ],
    "person": [
        (["Who is {name}?", "What does {name} do?"], "{name} is {a_occupation} from {birthplace}."),
        (["When was {name} born?", "In which year was {name} born?"], "{name} was born in {born}."),
        (["What is {name} known for?", "What is {name} famous for?"], "{name} is known for {known_for}."),
    ],
    "company": [
        (["What does {name} do?", "What kind of company is {name}?"], "{name} is {a_industry} company."),
        (
            ["Who founded {name}?", "When was {name} founded?"],
            "{name} was founded by {founder} in {founded}.",
        ),
        (["Where is {name} based?", "Where are the headquarters of {name}?"], "{name} is based in {hq}."),
    ],
}
INFOBOX_KEYS = (
    "region",
    "river",
    "population",
    "founded",
    "mayor",
    "length",
    "source",
    "mouth",
    "occupation",
    "born",
    "birthplace",
    "industry",
    "hq",
    "founder",
    "employees",
)
LINKED_FACTS = ("river", "mayor", "twin", "birthplace", "study_town", "founder", "hq")
PRONOUNS = [
    {"pronoun": "He", "pronoun_lower": "he", "pronoun_object": "him", "pronoun_possessive": "his"},
    {"pronoun": "She", "pronoun_lower": "she", "pronoun_object": "her", "pronoun_possessive": "her"},
]
CATEGORIES = {"town": "Towns", "river": "Rivers", "person": "People", "company": "Companies"}
SITES = ["atlas-of-places.example", "localhistory.example", "travelnotes.example"]
KIND_SHARE = {"town": 0.4, "river": 0.15, "person": 0.3, "company": 0.15}


@dataclass
class Entity:
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusFiles:
    warc: Path
    wiki: Path
    sft: Path
    expected: dict[str, int]
    """What was planted, e.g. ``non_english``, ``junk``, ``duplicates``, ``wiki_articles``."""


def generate_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_entities: int = 2500,
    pages_per_entity: int = 2,
    duplicate_fraction: float = 0.05,
    foreign_fraction: float = 0.04,
    junk_fraction: float = 0.03,
) -> CorpusFiles:
    """Write ``web.warc.gz``, ``wiki.xml.bz2`` and ``sft.jsonl`` under ``out_dir``; same seed, same bytes."""
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = _build_world(rng, n_entities)
    expected: dict[str, int] = {}
    files = CorpusFiles(out / "web.warc.gz", out / "wiki.xml.bz2", out / "sft.jsonl", expected)
    pages = _web_pages(
        rng, world, pages_per_entity, duplicate_fraction, foreign_fraction, junk_fraction, expected
    )
    _write_warc(files.warc, rng, pages)
    _write_wiki(files.wiki, rng, world, expected)
    _write_sft(files.sft, rng, world, expected)
    return files


# --- the invented world ---------------------------------------------------------------


def _build_world(rng: random.Random, n_entities: int) -> list[Entity]:
    seen: set[str] = set()

    def word(syllables: int) -> str:
        while True:
            w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))
            w = w.capitalize()
            if w not in seen:
                seen.add(w)
                return w

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
    for river in rivers:
        on_river = [t.name for t in towns if t.facts["river"] == river.name][:3] or [rng.choice(towns).name]
        river.facts["towns"] = (
            f"{', '.join(on_river[:-1])} and {on_river[-1]}" if len(on_river) > 1 else on_river[0]
        )
    for person in people:
        occupation = rng.choice(OCCUPATIONS)
        title = " ".join(["The", *rng.sample(TITLE_WORDS, 2)])
        person.facts = {
            "occupation": occupation,
            "a_occupation": _with_article(occupation),
            "birthplace": rng.choice(towns).name,
            "study_town": rng.choice(towns).name,
            "born": str(rng.randrange(1800, 2000)),
            **rng.choice(PRONOUNS),
            "known_for": WORKS.get(occupation, "the design of {title}").format(title=title),
            "prize": word(2),
            "prize_year": str(rng.randrange(1900, 2024)),
        }
    for company in companies:
        industry = rng.choice(INDUSTRIES)
        founder = rng.choice(people)
        company.facts = {
            "industry": industry,
            "a_industry": _with_article(industry),
            "hq": rng.choice(towns).name,
            "founder": founder.name,
            "founded": str(rng.randrange(1820, 2015)),
            "employees": f"{rng.randrange(12, 40_000):,}",
            "product": PRODUCTS[industry],
        }
    return [*towns, *rivers, *people, *companies]


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _sections(rng: random.Random, entity: Entity, link: Callable[[str], str]) -> list[tuple[str, list[str]]]:
    """One rendering of an entity's article: sections of sentences, each fact in a drawn phrasing."""
    values = {**entity.facts, "name": entity.name}
    values.update({key: link(values[key]) for key in LINKED_FACTS if key in values})
    return [
        (heading, [rng.choice(group).format(**values) for group in groups])
        for heading, groups in EN[entity.kind]
    ]


def _foreign_sections(town: Entity, lang: str) -> list[tuple[str, list[str]]]:
    values = {
        **town.facts,
        "name": town.name,
        "trade": town.facts[f"trade_{lang}"],
        "market_day_de": WEEKDAYS_DE[town.facts["market_day"]],
    }
    return [("", [paragraph.format(**values) for paragraph in FOREIGN[lang]])]


# --- web pages and the WARC -----------------------------------------------------------


@dataclass
class _Page:
    url: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _web_pages(
    rng: random.Random,
    world: list[Entity],
    pages_per_entity: int,
    duplicate_fraction: float,
    foreign_fraction: float,
    junk_fraction: float,
    expected: dict[str, int],
) -> list[_Page]:
    """Every entity on ``pages_per_entity`` sites, then the planted duplicates, foreign pages and junk."""
    pages: list[_Page] = []
    articles: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for entity in world:
        seen: list[list[tuple[str, list[str]]]] = []
        for site in rng.sample(SITES, min(pages_per_entity, len(SITES))):
            sections = _sections(rng, entity, lambda name: name)
            while sections in seen:  # two sites with the very same wording would be an unplanned duplicate
                sections = _sections(rng, entity, lambda name: name)
            seen.append(sections)
            articles.append((entity.name, sections))
            pages.append(_Page(_url(site, entity.name), _html(rng, site, entity.name, sections).encode()))
    n_dup = round(duplicate_fraction * len(pages))
    # Exact copies (mirrors, tracking parameters) and the same article in another site's layout:
    # the extracted text is identical, so exact dedup must drop both kinds.
    for page in rng.sample(pages, n_dup // 2):
        pages.append(_Page(page.url + f"?utm_source=feed{rng.randrange(100)}", page.body))
    for title, sections in rng.sample(articles, n_dup - n_dup // 2):
        site = rng.choice(SITES)
        pages.append(_Page(_url(site, title) + "/print", _html(rng, site, title, sections).encode()))
    # Near duplicates (one sentence reworded) are kept by exact dedup; MinHash is for them.
    for title, sections in rng.sample(articles, n_dup):
        changed = [(heading, list(sentences)) for heading, sentences in sections]
        changed[-1][1][-1] = (
            "This page was last reviewed by our editors in " + str(rng.randrange(2015, 2025)) + "."
        )
        site = rng.choice(SITES)
        pages.append(_Page(_url(site, title) + "/amp", _html(rng, site, title, changed).encode()))
    towns = [e for e in world if e.kind == "town"]
    n_foreign = max(1, round(foreign_fraction * len(pages)))
    for i in range(n_foreign):
        town, lang = rng.choice(towns), ["de", "fr", "es"][i % 3]
        html = _html(
            rng, f"{town.name.lower()}.{lang}.example", town.name, _foreign_sections(town, lang), lang=lang
        )
        # Every third foreign page is Latin-1 while its <meta> says utf-8: the HTTP header is right and must win.
        latin = i % 3 == 0
        pages.append(
            _Page(
                f"https://{town.name.lower()}.{lang}.example/",
                html.encode("latin-1" if latin else "utf-8"),
                "text/html; charset=iso-8859-1" if latin else "text/html; charset=utf-8",
            )
        )
    n_junk = max(3, round(junk_fraction * len(pages)))
    for i in range(n_junk):
        pages.append(_Page(f"https://{rng.choice(SITES)}/junk/{i}", _junk_html(rng, i % 3).encode()))
    non_html = [
        _Page(f"https://{site}/robots.txt", b"User-agent: *\nDisallow: /private/\n", "text/plain")
        for site in SITES
    ]
    non_html += [
        _Page(f"https://{site}/logo.png", b"\x89PNG\r\n\x1a\n" + rng.randbytes(64), "image/png")
        for site in SITES
    ]
    pages += non_html
    expected.update(
        web_articles=len(articles),
        exact_duplicates=n_dup,
        near_duplicates=n_dup,
        non_english=n_foreign,
        junk=n_junk,
        non_html=len(non_html),
        web_responses=len(pages),
    )
    rng.shuffle(pages)
    return pages


def _url(site: str, title: str) -> str:
    return f"https://{site}/wiki/{title.replace(' ', '_')}"


def _html(
    rng: random.Random, site: str, title: str, sections: list[tuple[str, list[str]]], lang: str = "en"
) -> str:
    """A page the way sites really serve it: the article inside nav, cookie banner, sidebar and footer."""
    nav = "".join(
        f'<li><a href="/{w.lower()}">{w}</a></li>'
        for w in ["Home", "Places", "People", "Companies", "About", "Contact"]
    )
    related = "".join(
        f'<li><a href="/wiki/r{rng.randrange(10_000)}">Related page {rng.randrange(100)}</a></li>'
        for _ in range(4)
    )
    body = "".join(
        (f"<h2>{html_escape(h)}</h2>" if h else "") + f"<p>{html_escape(' '.join(s))}</p>"
        for h, s in sections
    )
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{html_escape(title)} | {site}</title>'
        f"<style>body{{font-family:serif}} .cookie-banner{{position:fixed}}</style>"
        f"<script>window.dataLayer=[];function track(){{dataLayer.push(arguments)}}</script></head><body>"
        f'<div class="cookie-banner" id="cookie-consent">We use cookies to improve your experience on {site}. '
        f'<button>Accept all cookies</button> <a href="/privacy">Privacy policy</a></div>'
        f'<header><nav class="main-nav"><ul>{nav}</ul></nav></header>'
        f"<main><article><h1>{html_escape(title)}</h1>{body}</article>"
        f'<aside class="sidebar"><h3>See also</h3><ul>{related}</ul></aside></main>'
        f"<footer><p>&copy; {rng.randrange(2015, 2025)} {site}. All rights reserved.</p>"
        f'<ul class="footer-links"><li><a href="/terms">Terms of use</a></li><li><a href="/imprint">Imprint</a></li></ul>'
        f"</footer></body></html>"
    )


def _junk_html(rng: random.Random, kind: int) -> str:
    """Pages the quality filter must drop: too short, symbol soup, machine strings."""
    if kind == 0:
        text = "Page not found. Please try again later."
    elif kind == 1:
        text = " ".join(
            "".join(rng.choices("#$%&*+=/|<>~^@0123456789", k=rng.randrange(2, 7))) for _ in range(120)
        )
    else:
        text = " ".join(base64.b64encode(rng.randbytes(24)).decode() for _ in range(40))
    return f"<!DOCTYPE html><html><head><title>Untitled</title></head><body><main><p>{html_escape(text)}</p></main></body></html>"


def _write_warc(path: Path, rng: random.Random, pages: list[_Page]) -> None:
    """WARC/1.0 by hand, one gzip member per record, as Common Crawl writes it."""
    start = datetime(2024, 5, 18, tzinfo=timezone.utc)
    with open(path, "wb") as f:
        info = b"software: lmpipe-corpus\r\nformat: WARC File Format 1.0\r\nisPartOf: lmpipe-synthetic\r\n"
        f.write(
            _warc_record(
                rng, "warcinfo", start, info, "application/warc-fields", {"WARC-Filename": path.name}
            )
        )
        for i, page in enumerate(pages):
            date = start + timedelta(seconds=17 * i)
            host, _, rest = page.url.removeprefix("https://").partition("/")
            if i % 3 == 0:
                request = f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lmpipe-crawler/1.0\r\nAccept: */*\r\n\r\n"
                f.write(
                    _warc_record(
                        rng,
                        "request",
                        date,
                        request.encode(),
                        "application/http; msgtype=request",
                        {"WARC-Target-URI": page.url},
                    )
                )
            http = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {page.content_type}\r\nContent-Length: {len(page.body)}\r\n"
                f"Date: {date:%a, %d %b %Y %H:%M:%S} GMT\r\nServer: nginx\r\n\r\n"
            ).encode() + page.body
            f.write(
                _warc_record(
                    rng,
                    "response",
                    date,
                    http,
                    "application/http; msgtype=response",
                    {"WARC-Target-URI": page.url},
                )
            )


def _warc_record(
    rng: random.Random, kind: str, date: datetime, block: bytes, content_type: str, extra: dict[str, str]
) -> bytes:
    digest = base64.b32encode(hashlib.sha1(block).digest()).decode()
    headers = {
        "WARC-Type": kind,
        "WARC-Date": f"{date:%Y-%m-%dT%H:%M:%SZ}",
        "WARC-Record-ID": f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
        **extra,
        "WARC-Block-Digest": f"sha1:{digest}",
        "Content-Type": content_type,
        "Content-Length": str(len(block)),
    }
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return gzip.compress(head.encode() + block + b"\r\n\r\n", mtime=0)


# --- the Wikipedia dump ---------------------------------------------------------------


def _wikitext(rng: random.Random, entity: Entity) -> str:
    """An article with what real ones have: infobox, links, refs, headings, a table, an image, categories."""
    sections = _sections(
        rng, entity, lambda name: f"[[{name}]]" if rng.random() < 0.6 else f"[[{name}|{name}]]"
    )
    infobox = "".join(f"| {key} = {value}\n" for key, value in entity.facts.items() if key in INFOBOX_KEYS)
    parts = [f"{{{{Infobox {entity.kind}\n| name = {entity.name}\n{infobox}}}}}\n"]
    if rng.random() < 0.3:
        parts.append(f"[[File:{entity.name.replace(' ', '_')}.jpg|thumb|right|A view of {entity.name}]]\n")
    for heading, sentences in sections:
        if heading:
            parts.append(f"\n== {heading} ==\n")
        first, *rest = sentences
        first = first.replace(entity.name, f"'''{entity.name}'''", 1) if not heading else first
        ref = f"<ref>{{{{cite web |title={entity.name} |url=https://{rng.choice(SITES)}/}}}}</ref>"
        parts.append(" ".join([first + ref, *rest]) + "\n")
    if rng.random() < 0.2:
        parts.append(
            '\n{| class="wikitable"\n! Year !! Event\n|-\n| '
            + str(rng.randrange(1900, 2020))
            + " || Flood\n|}\n"
        )
    parts.append("\n== References ==\n{{Reflist}}\n\n")
    parts.append(
        f"[[Category:{CATEGORIES[entity.kind]}]]\n[[Category:{entity.facts.get('region', 'Unknown')}]]\n"
    )
    return "".join(parts)


def _write_wiki(path: Path, rng: random.Random, world: list[Entity], expected: dict[str, int]) -> None:
    pages: list[tuple[str, int, str]] = [(e.name, 0, _wikitext(rng, e)) for e in world]
    towns = [e for e in world if e.kind == "town"]
    redirects = [
        (f"{t.name} (town)", 0, f"#REDIRECT [[{t.name}]]")
        for t in rng.sample(towns, max(1, len(towns) // 20))
    ]
    disambiguation = [
        (
            f"{t.name} (disambiguation)",
            0,
            f"'''{t.name}''' may refer to:\n* [[{t.name}]], a town\n"
            f"* [[{t.name} River]], a river\n{{{{disambiguation}}}}",
        )
        for t in towns[:2]
    ]
    other = [
        (f"Talk:{world[0].name}", 1, "This article needs more sources. ~~~~"),
        ("Template:Infobox town", 10, "{{{name}}} is a town."),
        (f"Category:{CATEGORIES[world[0].kind]}", 14, "Articles about places."),
    ]
    all_pages = pages + redirects + disambiguation + other
    rng.shuffle(all_pages)
    namespaces = {0: "", 1: "Talk", 10: "Template", 14: "Category"}
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write(
            '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
            "  <siteinfo>\n    <sitename>Lmpipedia</sitename>\n    <dbname>lmpipewiki</dbname>\n"
            "    <generator>MediaWiki 1.41.0</generator>\n    <case>first-letter</case>\n    <namespaces>\n"
        )
        for key, name in namespaces.items():
            f.write(f'      <namespace key="{key}" case="first-letter">{name}</namespace>\n')
        f.write("    </namespaces>\n  </siteinfo>\n")
        for page_id, (title, ns, text) in enumerate(all_pages, start=1):
            redirect = (
                f'    <redirect title="{xml_escape(text[12:-2])}" />\n'
                if text.startswith("#REDIRECT")
                else ""
            )
            f.write(
                f"  <page>\n    <title>{xml_escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
                f"{redirect}    <revision>\n      <id>{1000 + page_id}</id>\n"
                f"      <timestamp>2024-01-{1 + page_id % 28:02d}T12:00:00Z</timestamp>\n"
                f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
                f'      <text bytes="{len(text.encode())}" xml:space="preserve">{xml_escape(text)}</text>\n'
                f"    </revision>\n  </page>\n"
            )
        f.write("</mediawiki>\n")
    expected.update(
        wiki_pages=len(all_pages),
        wiki_articles=len(pages),
        wiki_redirects=len(redirects),
        wiki_disambiguation=len(disambiguation),
        wiki_other_namespaces=len(other),
    )


# --- instruction pairs ----------------------------------------------------------------


def _write_sft(path: Path, rng: random.Random, world: list[Entity], expected: dict[str, int]) -> None:
    """Questions about the same facts the pretraining text states, so finetuning can lean on them."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for entity in world:
            values = {**entity.facts, "name": entity.name}
            for prompts, response in QA[entity.kind]:
                record = {
                    "prompt": rng.choice(prompts).format(**values),
                    "response": response.format(**values),
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
    expected["sft_records"] = n


def generate_split_corpus(out_dir: str | Path, *, web_files: int, n_entities: int = 60) -> list[Path]:
    """``web_files`` WARCs (seeds 0..web_files-1) plus one wiki dump: an input set of several
    tasks, for runs whose behaviour depends on how work splits across files (workers, executors)."""
    out = Path(out_dir)
    files = []
    for seed in range(web_files):
        corpus = generate_corpus(out / f"c{seed}", seed=seed, n_entities=n_entities)
        warc = out / f"web-{seed}.warc.gz"
        corpus.warc.rename(warc)
        files.append(warc)
    return [*files, corpus.wiki]
