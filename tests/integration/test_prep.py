"""Generated corpus -> run_prep -> docs/*.parquet + stats.json, checked against what the corpus planted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from data_prep.readers.parquet import read_parquet
from data_prep.stats import StageStats
from data_prep.writers.parquet import ParquetWriter
from pipeline.demo.corpus import CorpusFiles, generate_corpus

FOREIGN_WORDS = ("Einwohner", "habitants", "habitantes")
BOILERPLATE = ("We use cookies", "All rights reserved", "Terms of use", "Related page")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> CorpusFiles:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=5, n_entities=150)


def prep(
    corpus: CorpusFiles, output: Path, keep_intermediate: bool = False, **overrides
) -> tuple[dict, list[int]]:
    cfg = PrepConfig.from_dict(
        {
            "input": [str(corpus.warc), str(corpus.wiki)],
            "output": str(output),
            "dedup": {"keep_intermediate": keep_intermediate},
            **overrides,
        }
    )
    reports: list[int] = []
    return run_prep(cfg, progress=reports.append), reports


@pytest.fixture(scope="module")
def prepped(corpus, tmp_path_factory) -> tuple[dict, list[int], Path]:
    output = tmp_path_factory.mktemp("prepped")
    stats, reports = prep(corpus, output)
    return stats, reports, output


def read_docs(output: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(path) for path in sorted((output / "docs").glob("*.parquet")))


def snapshot(output: Path) -> dict[str, tuple[bytes, int]]:
    """Every output file's bytes and mtime (not the lock file, which names the last run's process)."""
    return {
        str(p.relative_to(output)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in output.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def test_rows_have_the_contract_schema_and_match_the_stats(prepped, corpus):
    stats, _, output = prepped
    table = read_docs(output)
    assert table.schema.names == ["id", "text", "source", "url", "metadata"]
    assert all(t == pa.string() for t in table.schema.types)
    assert table.num_rows == stats["totals"]["kept"] == stats["stages"]["write"]["kept"]
    assert set(table.column("source").to_pylist()) == {"cc", "wiki"}
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    metadata = [json.loads(m) for m in table.column("metadata").to_pylist()]
    assert all(m["language"] == "en" for m in metadata)
    assert (output / "config.yaml").is_file()
    assert PrepConfig.load(output / "config.yaml").input == [str(corpus.warc), str(corpus.wiki)]


def test_every_input_record_is_kept_dropped_or_an_error(prepped, corpus):
    stats, reports, output = prepped
    totals = stats["totals"]
    assert totals["input"] == corpus.expected["web_responses"] + corpus.expected["wiki_pages"]
    assert totals["input"] == totals["kept"] + sum(totals["dropped"].values()) + sum(
        totals["errors"].values()
    )
    previous_kept = None
    for name, stage in stats["stages"].items():
        errors = sum(e["count"] for e in stage["errors"].values())
        assert stage["input"] == stage["kept"] + sum(stage["dropped"].values()) + errors, name
        assert previous_kept is None or stage["input"] == previous_kept, name
        previous_kept = stage["kept"]
    assert sum(reports) == totals["input"]  # the progress callback saw every record read
    assert json.loads((output / "stats.json").read_text()) == stats


def test_dedup_stage_reports_the_time_of_its_keys(prepped):
    """Hashing and MinHash happen in the prep task; the dedup stage must still show that time."""
    stats, _, output = prepped
    markers = (output / "completions" / "prep").glob("*.done")
    keys_seconds = sum(json.loads(marker.read_text())["keys_seconds"] for marker in markers)
    assert keys_seconds > 0
    assert stats["stages"]["dedup"]["seconds"] >= round(keys_seconds, 4) - 1e-4


def test_planted_pages_are_dropped_for_the_right_reason(prepped, corpus):
    stats, _, output = prepped
    dropped, expected = stats["totals"]["dropped"], corpus.expected
    assert dropped["read/not_html"] == expected["non_html"]
    assert dropped["read/redirect"] == expected["wiki_redirects"]
    assert dropped["read/disambiguation"] == expected["wiki_disambiguation"]
    assert dropped["read/not_article_namespace"] == expected["wiki_other_namespaces"]
    # Language identification runs first (FineWeb's order), so it, not the quality gate, drops most junk
    # (symbol soup reads as no language); every foreign and junk page goes, and a short English page may
    # rarely read as another language.
    by_language_or_quality = sum(n for key, n in dropped.items() if key.startswith(("language/", "quality/")))
    articles = expected["web_articles"] + expected["wiki_articles"]
    planted = expected["non_english"] + expected["junk"]
    assert planted <= by_language_or_quality <= planted + articles // 100
    # A planted copy of a page Gopher's repetition rule drops (a templated page repeating a name) goes too.
    repetitive = sum(n for key, n in dropped.items() if key.startswith("repetition/"))
    assert (
        expected["exact_duplicates"] - repetitive
        <= dropped["dedup/duplicate"]
        <= expected["exact_duplicates"]
    )
    texts = read_docs(output).column("text").to_pylist()
    assert not any(word in text for text in texts for word in FOREIGN_WORDS)
    assert not any(phrase in text for text in texts for phrase in BOILERPLATE)
    assert not any("{{" in text or "[[" in text or "<ref" in text for text in texts)


def test_rerun_with_all_tasks_done_changes_nothing(prepped, corpus):
    stats, _, output = prepped
    before = snapshot(output)
    again, reports = prep(corpus, output)
    assert again == stats and reports == []
    assert snapshot(output) == before


def test_rerun_redoes_only_the_unfinished_task_from_scratch(corpus, tmp_path):
    first, _ = prep(corpus, tmp_path, keep_intermediate=True)
    docs_before = sorted(p.name for p in (tmp_path / "docs").iterdir())
    wiki_task = next(name for name, task in first["tasks"].items() if task["format"] == "wiki")
    web_filtered = next((tmp_path / "filtered").glob("web.warc.gz-*.parquet"))
    web_mtime = web_filtered.stat().st_mtime_ns
    # An interrupted wiki task: no marker, a half-written shard left behind.
    (tmp_path / "completions" / "prep" / f"{wiki_task}.done").unlink()
    (tmp_path / "filtered" / f".{wiki_task}-00001.parquet.tmp").write_bytes(b"partial")
    second, reports = prep(corpus, tmp_path, keep_intermediate=True)
    assert sum(reports) == corpus.expected["wiki_pages"]  # only the wiki input was read again
    assert web_filtered.stat().st_mtime_ns == web_mtime
    assert not (tmp_path / "filtered" / f".{wiki_task}-00001.parquet.tmp").exists()
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == docs_before
    assert strip_times(second) == strip_times(first)


def test_redoing_a_task_after_cleanup_redoes_the_inputs_whose_filtered_docs_are_gone(corpus, tmp_path):
    first, _ = prep(corpus, tmp_path)
    assert not (tmp_path / "filtered").exists()  # deleted at the end by default
    wiki_task = next(name for name, task in first["tasks"].items() if task["format"] == "wiki")
    (tmp_path / "completions" / "prep" / f"{wiki_task}.done").unlink()
    second, reports = prep(corpus, tmp_path)
    assert sum(reports) == first["totals"]["input"]  # dedup needs every input's filtered docs again
    assert strip_times(second) == strip_times(first)


def test_a_rerun_with_another_config_is_refused_but_execution_keys_may_change(corpus, tmp_path):
    first, _ = prep(corpus, tmp_path)
    with pytest.raises(ValueError, match=r"another config \(differs in docs_per_shard, quality.min_words\)"):
        prep(corpus, tmp_path, docs_per_shard=7, quality={"min_words": 3})
    again, reports = prep(corpus, tmp_path, workers=2, keep_intermediate=True)
    assert again == first and reports == []


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_the_lock(corpus, tmp_path):
    from data_prep.output_guard import output_lock

    with output_lock(tmp_path):
        with pytest.raises(
            ValueError, match=f"{tmp_path} is being written by another lmpipe data prep \\(pid "
        ):
            prep(corpus, tmp_path)
    prep(corpus, tmp_path)  # released: the run goes ahead


def strip_times(stats: dict) -> dict:
    """Stats without the timings, which differ from run to run."""
    copy = json.loads(json.dumps(stats))
    for key in ("seconds", "docs_per_second", "wall_seconds"):
        copy["totals"].pop(key)
    for stage in copy["stages"].values():
        stage.pop("seconds")
    for task in copy["tasks"].values():
        task.pop("seconds")
    copy.get("cluster", {}).pop("seconds", None)
    return copy


def test_two_workers_write_the_same_documents(prepped, corpus, tmp_path):
    stats, _, output = prepped
    parallel, reports = prep(corpus, tmp_path, workers=2)
    assert strip_times(parallel) == strip_times(stats)
    assert sum(reports) == stats["totals"]["input"]
    assert read_docs(tmp_path).sort_by("id").equals(read_docs(output).sort_by("id"))


def test_docs_are_byte_identical_for_one_and_two_workers(prepped, corpus, tmp_path):
    """The worker count says how fast, never what: the same shard files, byte for byte."""
    _, _, output = prepped
    prep(corpus, tmp_path, workers=2)

    def shards(root: Path) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted((root / "docs").glob("*.parquet"))}

    assert shards(tmp_path) == shards(output) != {}


def test_bad_inputs_fail_before_any_work_naming_the_path(corpus, tmp_path):
    """(A zero-byte file is not among them: it is counted, see test_bad_input.py.)"""
    output = tmp_path / "out"
    missing = tmp_path / "nope.warc.gz"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_prep(PrepConfig(input=[str(corpus.warc), str(missing)], output=str(output)))
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        run_prep(PrepConfig(input=[str(tmp_path / "*.warc.gz")], output=str(output)))
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    with pytest.raises(ValueError, match=f"cannot tell the format of {unknown}"):
        run_prep(PrepConfig(input=[str(unknown)], output=str(output)))
    assert not output.exists()


def test_globs_and_directories_expand_to_their_files(corpus, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(corpus.warc, inputs / "a.warc.gz")
    shutil.copy(corpus.warc, inputs / "b.warc.gz")
    (inputs / "README").write_text("not an input")
    by_glob = run_prep(PrepConfig(input=[str(inputs / "*.warc.gz")], output=str(tmp_path / "glob")))
    by_dir = run_prep(PrepConfig(input=[str(inputs)], output=str(tmp_path / "dir")))
    assert sorted(Path(t["path"]).name for t in by_glob["tasks"].values()) == ["a.warc.gz", "b.warc.gz"]
    assert strip_times(by_dir)["totals"] == strip_times(by_glob)["totals"]
    # Dedup is across inputs: the copy adds nothing (every page of b is an exact duplicate of a's).
    first, second = by_glob["tasks"].values()
    assert first["kept"] > 0 and second["kept"] == 0
    dedup = by_glob["stages"]["dedup"]
    assert (
        sum(by_glob["cluster"]["removed"].values())
        == dedup["input"] - first["kept"]
        == sum(dedup["dropped"].values())
    )


def test_data_stats_prints_a_row_per_stage_and_the_dedup_decision(prepped, capsys):
    from pipeline.cli.main import main

    stats, _, output = prepped
    assert main(["data", "stats", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["stage", "in", "kept", "dropped", "errors", "MB", "kept", "seconds", "docs/s"]
    rows = {line.split()[0]: line.split() for line in lines[1 : len(stats["stages"]) + 1]}
    assert list(rows) == list(stats["stages"])
    for name, stage in stats["stages"].items():
        assert rows[name][1:4] == [
            f"{stage['input']:,}",
            f"{stage['kept']:,}",
            f"{sum(stage['dropped'].values()):,}",
        ]
    removed = stats["cluster"]["removed"]
    assert any(
        line.startswith(
            f"dedup over {stats['cluster']['docs']:,} documents: duplicate {removed['duplicate']:,}"
        )
        for line in lines
    )
    assert lines[-1].startswith(f"read {stats['totals']['input']:,}, kept {stats['totals']['kept']:,}")


def test_an_input_that_loses_nothing_to_dedup_is_linked_not_rewritten(corpus, tmp_path):
    """Rewriting its filtered shard would give the same bytes: it is linked, and counted as written."""
    unique = tmp_path / "unique.jsonl"
    unique.write_text(
        "".join(json.dumps({"id": str(i), "text": text}) + "\n" for i, text in enumerate(PROSE))
    )
    out = tmp_path / "out"
    stats = run_prep(
        PrepConfig.from_dict(
            {
                "input": [str(corpus.warc), str(unique)],
                "output": str(out),
                "dedup": {"keep_intermediate": True},
            }
        )
    )
    (shard,) = (out / "docs").glob("unique.jsonl-*.parquet")
    assert shard.samefile(out / "filtered" / shard.name)
    task = shard.name.rsplit("-", 1)[0]
    (rewritten,) = ParquetWriter(tmp_path / "rewritten", task, 50_000).write(
        read_parquet(str(shard), StageStats())
    )
    assert rewritten.read_bytes() == shard.read_bytes()
    assert stats["stages"]["write"]["kept"] == read_docs(out).num_rows == stats["totals"]["kept"]
    assert stats["tasks"][task]["kept"] == len(PROSE)


PROSE = (
    "People who live near the old river say that it has changed little over the years, and the visitors who "
    "come in the spring are often surprised by how quiet the place is. The council keeps a record of every "
    "flood since the town was founded, and the oldest entries were written by hand more than two hundred "
    "years ago by the monks who built the first bridge.",
    "The market opens at dawn on Saturdays. Farmers from the hills bring cheese, apples and honey, and by "
    "noon most of the stalls have sold out. A brass band plays in the square during the summer months, and "
    "the bakery on the corner sells a plum cake that is made to a recipe nobody in the family will share.",
    "Our school teaches children from six villages. Each class has its own garden, where pupils grow beans "
    "and potatoes and learn how weather and soil decide a harvest. In winter the older pupils write a short "
    "newspaper about local history, which is printed at the library and handed out at the station.",
)
