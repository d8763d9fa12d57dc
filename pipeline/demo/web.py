"""The demo corpus's web side: pages as sites serve them (with boilerplate), the planted duplicates,
foreign pages, junk and non-HTML responses, and a gzipped WARC of them written by hand."""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape as html_escape
from pathlib import Path

from pipeline.demo.words import SITES
from pipeline.demo.world import Entity, foreign_sections, render_sections


@dataclass
class Page:
    url: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"


Article = tuple[str, list[tuple[str, list[str]]]]
"""(title, sections): one rendering of an entity's article."""


def web_pages(
    rng: random.Random,
    world: list[Entity],
    pages_per_entity: int,
    duplicate_fraction: float,
    foreign_fraction: float,
    junk_fraction: float,
    expected: dict[str, int],
) -> list[Page]:
    """Every entity on ``pages_per_entity`` sites, then the planted duplicates, foreign pages and junk."""
    pages, articles = _article_pages(rng, world, pages_per_entity)
    n_dup = round(duplicate_fraction * len(pages))
    pages += _duplicate_pages(rng, pages, articles, n_dup)
    towns = [e for e in world if e.kind == "town"]
    n_foreign = max(1, round(foreign_fraction * len(pages)))
    pages += [_foreign_page(rng, i, rng.choice(towns), ["de", "fr", "es"][i % 3]) for i in range(n_foreign)]
    n_junk = max(3, round(junk_fraction * len(pages)))
    for i in range(n_junk):
        pages.append(Page(f"https://{rng.choice(SITES)}/junk/{i}", junk_html(rng, i % 3).encode()))
    non_html = [
        Page(f"https://{site}/robots.txt", b"User-agent: *\nDisallow: /private/\n", "text/plain")
        for site in SITES
    ]
    non_html += [
        Page(f"https://{site}/logo.png", b"\x89PNG\r\n\x1a\n" + rng.randbytes(64), "image/png")
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


def _article_pages(
    rng: random.Random, world: list[Entity], pages_per_entity: int
) -> tuple[list[Page], list[Article]]:
    """Each entity's article on ``pages_per_entity`` sites, each site with its own wording."""
    pages: list[Page] = []
    articles: list[Article] = []
    for entity in world:
        seen: list[list[tuple[str, list[str]]]] = []
        for site in rng.sample(SITES, min(pages_per_entity, len(SITES))):
            sections = render_sections(rng, entity, lambda name: name)
            while sections in seen:  # two sites with the very same wording would be an unplanned duplicate
                sections = render_sections(rng, entity, lambda name: name)
            seen.append(sections)
            articles.append((entity.name, sections))
            pages.append(
                Page(page_url(site, entity.name), page_html(rng, site, entity.name, sections).encode())
            )
    return pages, articles


def _duplicate_pages(
    rng: random.Random, pages: list[Page], articles: list[Article], n_dup: int
) -> list[Page]:
    """``n_dup`` exact duplicates and ``n_dup`` near duplicates of the article pages."""
    copies: list[Page] = []
    # Exact copies (mirrors, tracking parameters) and the same article in another site's layout:
    # the extracted text is identical, so exact dedup must drop both kinds.
    for page in rng.sample(pages, n_dup // 2):
        copies.append(Page(page.url + f"?utm_source=feed{rng.randrange(100)}", page.body))
    for title, sections in rng.sample(articles, n_dup - n_dup // 2):
        site = rng.choice(SITES)
        copies.append(Page(page_url(site, title) + "/print", page_html(rng, site, title, sections).encode()))
    # Near duplicates (one sentence reworded) are kept by exact dedup; MinHash is for them.
    for title, sections in rng.sample(articles, n_dup):
        changed = [(heading, list(sentences)) for heading, sentences in sections]
        changed[-1][1][-1] = (
            "This page was last reviewed by our editors in " + str(rng.randrange(2015, 2025)) + "."
        )
        site = rng.choice(SITES)
        copies.append(Page(page_url(site, title) + "/amp", page_html(rng, site, title, changed).encode()))
    return copies


def _foreign_page(rng: random.Random, i: int, town: Entity, lang: str) -> Page:
    html = page_html(
        rng, f"{town.name.lower()}.{lang}.example", town.name, foreign_sections(town, lang), lang=lang
    )
    # Every third foreign page is Latin-1 while its <meta> says utf-8: the HTTP header is right
    # and must win.
    latin = i % 3 == 0
    return Page(
        f"https://{town.name.lower()}.{lang}.example/",
        html.encode("latin-1" if latin else "utf-8"),
        "text/html; charset=iso-8859-1" if latin else "text/html; charset=utf-8",
    )


def page_url(site: str, title: str) -> str:
    return f"https://{site}/wiki/{title.replace(' ', '_')}"


def page_html(
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
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{html_escape(title)} | '
        f"{site}</title>"
        f"<style>body{{font-family:serif}} .cookie-banner{{position:fixed}}</style>"
        f"<script>window.dataLayer=[];function track(){{dataLayer.push(arguments)}}</script></head><body>"
        '<div class="cookie-banner" id="cookie-consent">We use cookies to improve your experience on '
        f"{site}. "
        f'<button>Accept all cookies</button> <a href="/privacy">Privacy policy</a></div>'
        f'<header><nav class="main-nav"><ul>{nav}</ul></nav></header>'
        f"<main><article><h1>{html_escape(title)}</h1>{body}</article>"
        f'<aside class="sidebar"><h3>See also</h3><ul>{related}</ul></aside></main>'
        f"<footer><p>&copy; {rng.randrange(2015, 2025)} {site}. All rights reserved.</p>"
        '<ul class="footer-links"><li><a href="/terms">Terms of use</a></li><li><a '
        'href="/imprint">Imprint</a></li></ul>'
        f"</footer></body></html>"
    )


def junk_html(rng: random.Random, kind: int) -> str:
    """Pages the quality filter must drop: too short, symbol soup, machine strings."""
    if kind == 0:
        text = "Page not found. Please try again later."
    elif kind == 1:
        text = " ".join(
            "".join(rng.choices("#$%&*+=/|<>~^@0123456789", k=rng.randrange(2, 7))) for _ in range(120)
        )
    else:
        text = " ".join(base64.b64encode(rng.randbytes(24)).decode() for _ in range(40))
    return (
        "<!DOCTYPE html><html><head><title>Untitled</title></head><body>"
        f"<main><p>{html_escape(text)}</p></main></body></html>"
    )


def write_warc(path: Path, rng: random.Random, pages: list[Page]) -> None:
    """WARC/1.0 by hand, one gzip member per record, as Common Crawl writes it."""
    start = datetime(2024, 5, 18, tzinfo=timezone.utc)
    with open(path, "wb") as f:
        info = b"software: lmpipe-corpus\r\nformat: WARC File Format 1.0\r\nisPartOf: lmpipe-synthetic\r\n"
        f.write(
            warc_record(rng, "warcinfo", start, info, "application/warc-fields", {"WARC-Filename": path.name})
        )
        for i, page in enumerate(pages):
            date = start + timedelta(seconds=17 * i)
            host, _, rest = page.url.removeprefix("https://").partition("/")
            if i % 3 == 0:
                request = (
                    f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\n"
                    "User-Agent: lmpipe-crawler/1.0\r\nAccept: */*\r\n\r\n"
                )
                f.write(
                    warc_record(
                        rng,
                        "request",
                        date,
                        request.encode(),
                        "application/http; msgtype=request",
                        {"WARC-Target-URI": page.url},
                    )
                )
            http = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {page.content_type}\r\nContent-Length: "
                f"{len(page.body)}\r\n"
                f"Date: {date:%a, %d %b %Y %H:%M:%S} GMT\r\nServer: nginx\r\n\r\n"
            ).encode() + page.body
            f.write(
                warc_record(
                    rng,
                    "response",
                    date,
                    http,
                    "application/http; msgtype=response",
                    {"WARC-Target-URI": page.url},
                )
            )


def warc_record(
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
