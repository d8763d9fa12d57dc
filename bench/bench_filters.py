"""lmpipe's quality filters side by side with datatrove 0.10.1's, on the same texts (issue 17, item 3).

Texts: every HTML page of the fixture WARCs (/work/shared/fixtures/warc), extracted twice, by lmpipe
(resiliparse) and by trafilatura; empty extractions are left out. Each text goes through each pair:

- Gopher quality: datatrove ``GopherQualityFilter()`` vs lmpipe ``QualityFilter`` (defaults);
- Gopher repetition: ``GopherRepetitionFilter()`` vs ``RepetitionFilter`` (defaults);
- C4: ``C4QualityFilter`` with the C4 paper's thresholds (5 words a line, 3 sentences a page; its
  defaults, 3 and 5, are FineWeb's) vs ``C4Filter`` (defaults);
- FineWeb: ``FineWebQualityFilter()`` vs lmpipe's ``FineWebQualityFilter`` (FineWeb's thresholds).

Where datatrove departs from the paper, the comparison says so instead of copying it: its alphabetic
word ratio counts spaCy's punctuation tokens as words (Gopher: "words", whitespace-separated), so a
page with many commas fails it; the run also reports that ratio computed over words only. Its
repetition filter drops a short page whose most frequent n-gram occurs once (not a repetition).

datatrove runs in its own venv (``--venv``, default ~/.cache/lmpipe-bench/datatrove-venv), made on
first use with the recipe in /work/shared/PLATFORM.md; spaCy uses ``spacy.blank("en")`` (no
downloads). Run: ``python bench/bench_filters.py`` (about a minute once the venv exists).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from data_prep.config import (
    C4FilterConfig,
    FineWebQualityFilterConfig,
    QualityFilterConfig,
    RepetitionFilterConfig,
)
from data_prep.document import Document
from data_prep.extract.html import html_to_text, trafilatura_to_text
from data_prep.filters import BaseFilter, C4Filter, FineWebQualityFilter, QualityFilter, RepetitionFilter
from data_prep.readers import READERS
from data_prep.stats import StageStats

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "warc"
VENV = Path.home() / ".cache" / "lmpipe-bench" / "datatrove-venv"
PACKAGES = [
    "datatrove==0.10.1",
    "trafilatura",
    "spacy",
    "warcio",
    "xxhash<4",
    "faust-cchardet",
    "python-magic",
    "orjson",
    "tokenizers",
    "zstandard",
    "lxml_html_clean",
    "pyahocorasick",
    "fasteners",
    "tldextract",
    "resiliparse==2.0.1",
    "fastwarc==2.0.1",
    "pyarrow==25.0.1",
]
TARGETS = {"gopher_quality": 0.95, "gopher_repetition": 0.95, "c4": 0.95}

CHILD = r"""
import json, sys
from collections import Counter
import datatrove.pipeline.filters.gopher_repetition_filter as repetition
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter)
from datatrove.utils.text import split_into_words
from datatrove.utils.typeshelper import Languages

PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’…–—«»")
as_published = find_top = repetition.find_top_duplicate

def repeated_top(grams):
    top = Counter(grams).most_common(1)
    return find_top(grams) if top and top[0][1] > 1 else 0

def alpha_over_words(text):
    words = [w for w in split_into_words(text, Languages.english) if any(c not in PUNCT for c in w)]
    return sum(any(c.isalpha() for c in w) for w in words) / max(len(words), 1)

def verdict(step, text):
    got = step.filter(Document(text=text, id="x"))
    keep, reason = got if isinstance(got, tuple) else (got, "")
    return [bool(keep), reason or ""]

filters = {
    "gopher_quality": GopherQualityFilter(),
    "gopher_repetition": GopherRepetitionFilter(),
    "c4": C4QualityFilter(min_num_sentences=3, min_words_per_line=5),
    "fineweb": FineWebQualityFilter(),
}
no_alpha_rule = GopherQualityFilter(max_non_alpha_words_ratio=None)
paper_repetition = GopherRepetitionFilter()
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
out = {name: [verdict(step, text) for text in texts] for name, step in filters.items()}
out["gopher_quality/paper"] = []
for text in texts:
    got = verdict(no_alpha_rule, text)
    if got[0] and alpha_over_words(text) < 0.8:
        got = [False, "gopher_below_alpha_threshold"]
    out["gopher_quality/paper"].append(got)
repetition.find_top_duplicate = repeated_top
out["gopher_repetition/paper"] = [verdict(paper_repetition, text) for text in texts]
json.dump(out, sys.stdout)
"""
PAPER_NOTES = {
    "gopher_quality": "alphabetic-word ratio over words, not spaCy's punctuation tokens",
    "gopher_repetition": "a top n-gram counts only if it occurs more than once",
}
"""How the ``/paper`` runs of datatrove differ from its defaults: where lmpipe keeps the paper's rule."""


def ensure_venv(venv: Path) -> Path:
    """The datatrove venv's python, made (and datatrove installed) on first use."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import datatrove"]).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def fixture_texts() -> list[tuple[str, str]]:
    """(label, text) for every HTML page of the fixture WARCs, extracted by lmpipe and by trafilatura."""
    texts = []
    for path in sorted(FIXTURES.glob("*.warc.gz")):
        if ".wat." in path.name or ".wet." in path.name:
            continue
        for doc in READERS["warc"](str(path), StageStats()):
            label = doc.url or doc.id
            for extractor, to_text in (("lmpipe", html_to_text), ("trafilatura", trafilatura_to_text)):
                text = to_text(doc.text)
                if text:
                    texts.append((f"{extractor} {label}", text))
    return texts


def lmpipe_filters() -> dict[str, BaseFilter]:
    return {
        "gopher_quality": QualityFilter(QualityFilterConfig()),
        "gopher_repetition": RepetitionFilter(RepetitionFilterConfig()),
        "c4": C4Filter(C4FilterConfig()),
        "fineweb": FineWebQualityFilter(FineWebQualityFilterConfig(enabled=True)),
    }


def lmpipe_verdicts(texts: list[str]) -> dict[str, list[tuple[bool, str]]]:
    out: dict[str, list[tuple[bool, str]]] = {}
    for name, step in lmpipe_filters().items():
        verdicts = []
        for text in texts:
            verdict = step.filter(Document("x", text, "cc"))
            verdicts.append(verdict if isinstance(verdict, tuple) else (verdict, ""))
        out[name] = verdicts
    return out


def datatrove_verdicts(python: Path, texts: list[str]) -> dict[str, list]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.jsonl"
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
        done = subprocess.run([python, "-c", CHILD, str(path)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"datatrove run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def report_one(name: str, labels: list[str], ours: list, theirs: list) -> float:
    """Print one filter pair's agreement and every disagreement with both reasons; returns the agreement."""
    same = sum(mine[0] == other[0] for mine, other in zip(ours, theirs))
    agreement = same / len(labels)
    target = TARGETS.get(name)
    verdict = "" if target is None else ("  ok" if agreement >= target else f"  BELOW {target}")
    kept_ours, kept_theirs = sum(m[0] for m in ours), sum(t[0] for t in theirs)
    print(
        f"\n{name}: agreement {agreement:.3f} ({same}/{len(labels)}){verdict}; "
        f"kept lmpipe {kept_ours}, datatrove {kept_theirs}"
    )
    for label, mine, other in zip(labels, ours, theirs):
        if mine[0] != other[0]:
            print(
                f"  {label[:90]}: lmpipe {'keep' if mine[0] else 'drop ' + mine[1]}, "
                f"datatrove {'keep' if other[0] else 'drop ' + other[1]}"
            )
    return agreement


def report(labels: list[str], ours: dict, theirs: dict) -> dict[str, float]:
    """Each pair against datatrove's defaults; where lmpipe keeps the paper's rule, also against
    datatrove set to that rule (``<name>/paper``), which is what the targets apply to."""
    agreement = {}
    for name in ours:
        print(f"\n== {name}")
        if name not in PAPER_NOTES:
            agreement[name] = report_one(f"{name} vs datatrove", labels, ours[name], theirs[name])
            continue
        agreement[f"{name}/defaults"] = report_one(
            f"{name} vs datatrove defaults", labels, ours[name], theirs[name]
        )
        agreement[name] = report_one(
            f"{name} vs datatrove with {PAPER_NOTES[name]}", labels, ours[name], theirs[f"{name}/paper"]
        )
    return agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=VENV, help="datatrove's venv (made if missing)")
    args = parser.parse_args()
    python = ensure_venv(args.venv)
    labelled = fixture_texts()
    labels, texts = [label for label, _ in labelled], [text for _, text in labelled]
    print(f"{len(texts)} texts from {FIXTURES} (lmpipe and trafilatura extractions, empty ones left out)")
    print(
        "C4 compared at the paper's thresholds "
        "(datatrove's defaults are FineWeb's: 3 words/line, 5 sentences)"
    )
    agreement = report(labels, lmpipe_verdicts(texts), datatrove_verdicts(python, texts))
    print("\nsummary: " + ", ".join(f"{name} {value:.3f}" for name, value in agreement.items()))
    for name, target in TARGETS.items():
        print(
            f"target {name} >= {target}: {agreement[name]:.3f} "
            + ("ok" if agreement[name] >= target else "MISSED")
        )
    missed = [name for name, target in TARGETS.items() if agreement[name] < target]
    if missed:
        raise SystemExit(f"below target: {', '.join(missed)}")


if __name__ == "__main__":
    main()
