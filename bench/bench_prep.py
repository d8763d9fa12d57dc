"""The whole lmpipe prep path vs raw resiliparse, in documents per second.

Ours: ``data_prep.prep.run_prep`` (read + extract + quality + language + exact dedup +
parquet write + stats/markers), one worker. Anchor: the bare library calls that do
the real work of that path, with none of our bookkeeping: fastwarc's ArchiveIterator
over response records, then ``detect_encoding`` + ``bytes_to_str`` +
``extract_plain_text(main_content=True)`` + ``detect_fast`` on every HTML body.
Extraction dominates both, so the ratio says how much our streaming, filters, dedup
and writing cost on top of it (PLATFORM.md "Extraction speed": target >= 0.6x).

Two inputs: the generated corpus's WARC (synthetic pages), and, when present, the
real Common Crawl fixture WARCs copied to ~500 HTML pages. docs/s counts response
records (the same count for both sides). Run: ``python bench/bench_prep.py [--quick]``.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import tempfile
from pathlib import Path

from anchors import resiliparse_anchor
from timing import median_seconds

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from pipeline.demo.corpus import generate_corpus

TARGET = 0.6
FIXTURES = str(Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "warc" / "*.warc.gz")
FIXTURE_PAGES = 500


def ours(paths: list[Path], out: Path) -> int:
    """The whole prep path into a fresh ``out``; returns the response records read."""
    shutil.rmtree(out, ignore_errors=True)
    stats = run_prep(PrepConfig(input=[str(p) for p in paths], output=str(out)))
    return stats["totals"]["input"]


def compare(label: str, paths: list[Path], work: Path) -> tuple[str, int, float, float]:
    seconds, counts = median_seconds(
        {"ours": lambda: ours(paths, work / "prep_out"), "anchor": lambda: resiliparse_anchor(paths)}
    )
    if counts["ours"] != counts["anchor"]:
        raise RuntimeError(f"{label}: ours read {counts['ours']} response records, anchor {counts['anchor']}")
    n = counts["anchor"]
    return label, n, n / seconds["ours"], n / seconds["anchor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller synthetic corpus")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as tmp:
        work = Path(tmp)
        corpus = generate_corpus(work / "corpus", seed=0, n_entities=300 if args.quick else 2500)
        rows.append(compare("synthetic WARC", [corpus.warc], work))
        fixtures = sorted(Path(p) for p in glob.glob(FIXTURES))
        if fixtures:
            html_pages = resiliparse_anchor(fixtures)  # all responses in the fixtures are HTML
            copies = max(1, round(FIXTURE_PAGES / html_pages))
            (work / "cc").mkdir()
            paths = [
                Path(shutil.copy(p, work / "cc" / f"{i:03d}-{p.name}"))
                for i in range(copies)
                for p in fixtures
            ]
            rows.append(compare(f"CC fixtures x{copies}", paths, work))
        else:
            print(f"(no {FIXTURES}: real-page comparison skipped)")

    print(
        f"\n{'prep path (1 worker)':<24} {'responses':>9} {'ours docs/s':>12} {'anchor docs/s':>14} "
        f"{'ratio':>7} {'target':>7}"
    )
    for label, n, ours_rate, anchor_rate in rows:
        ratio = ours_rate / anchor_rate
        verdict = "ok" if ratio >= TARGET else "BELOW"
        print(
            f"{label:<24} {n:>9,} {ours_rate:>12,.0f} {anchor_rate:>14,.0f} {ratio:>6.2f}x "
            f"{'>=' + format(TARGET, '.1f') + 'x':>7} {verdict}"
        )
    print(
        "anchor: fastwarc + resiliparse detect_encoding/bytes_to_str/"
        "extract_plain_text(main_content)/detect_fast;"
        " median of 3 after a warm-up"
    )


if __name__ == "__main__":
    main()
