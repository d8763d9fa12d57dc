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

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo.phrases import QA
from pipeline.demo.web import web_pages, write_warc
from pipeline.demo.wiki import write_wiki
from pipeline.demo.world import Entity, build_world


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
    world = build_world(rng, n_entities)
    expected: dict[str, int] = {}
    files = CorpusFiles(out / "web.warc.gz", out / "wiki.xml.bz2", out / "sft.jsonl", expected)
    pages = web_pages(
        rng, world, pages_per_entity, duplicate_fraction, foreign_fraction, junk_fraction, expected
    )
    write_warc(files.warc, rng, pages)
    write_wiki(files.wiki, rng, world, expected)
    write_sft(files.sft, rng, world, expected)
    return files


def write_sft(path: Path, rng: random.Random, world: list[Entity], expected: dict[str, int]) -> None:
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
