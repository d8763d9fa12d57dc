"""The demo corpus's vocabulary: name parts, occupations, trades, sites, and which facts are linked."""

from __future__ import annotations

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
