"""The demo corpus's MediaWiki XML dump: articles in wikitext, plus redirects, disambiguation pages
and pages of other namespaces that prep must skip."""

from __future__ import annotations

import bz2
import random
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from pipeline.demo.words import CATEGORIES, INFOBOX_KEYS, SITES
from pipeline.demo.world import Entity, render_sections


def wikitext(rng: random.Random, entity: Entity) -> str:
    """An article with what real ones have: infobox, links, refs, headings, a table, an image, categories."""
    sections = render_sections(
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


def write_wiki(path: Path, rng: random.Random, world: list[Entity], expected: dict[str, int]) -> None:
    pages: list[tuple[str, int, str]] = [(e.name, 0, wikitext(rng, e)) for e in world]
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
                f"  <page>\n    <title>{xml_escape(title)}</title>\n    <ns>{ns}</ns>\n    "
                f"<id>{page_id}</id>\n"
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
