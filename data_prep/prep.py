"""``lmpipe data prep``: web crawls, dumps and document files -> ``docs/*.parquet`` + ``stats.json``.

A run is up to three stages (DESIGN §4, §8), each a list of tasks on an executor:

1. ``prep``, one task per input (a local file or a URL): read -> extract -> url -> language ->
   repetition -> quality -> c4 -> fineweb -> badwords -> pii -> write (FineWeb's order), each
   document streaming through every enabled stage (a batch stage holds at most a few hundred),
   so memory does not grow with the file. Pre-extracted formats (WET, JSONL, Parquet, HF
   datasets) skip extraction. With dedup on, the task writes
   ``filtered/`` and then its dedup keys (``data_prep.dedup.keys``); with it off, ``docs/``.
2. ``cluster``, one task over all inputs: decides which documents are exact, URL or near
   duplicates of an earlier one (``data_prep.dedup.removal``).
3. ``dedup``, one task per input: copies its filtered documents to ``docs/`` without the
   removed ones. ``filtered/`` is deleted at the end unless ``dedup.keep_intermediate``.

Resume: a finished task leaves ``completions/<stage>/<task>.done``, written last and
holding its stats. An input that cannot be read even after retries (a URL that stays down)
leaves ``completions/prep/<task>.failed`` instead: it is reported, the others are written,
and a rerun retries it (``data_prep.failures``). A rerun skips finished tasks and redoes
any other from scratch after deleting what an interrupted run of it left. If any ``prep``
task is redone, ``cluster`` and every ``dedup`` task are redone too (the removal sets depend
on all inputs).
``stats.json`` is merged from the markers, so it covers all tasks whichever run did them;
when every task is done the rerun changes nothing. One run at a time may write an output
directory (a lock), and a rerun must use the same config, up to how it is executed
(``data_prep.output_guard``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

from data_prep.config import PrepConfig
from data_prep.dedup.keys import TaskKeys, keys_path
from data_prep.dedup.removal import TaskRemovals, plan_removals
from data_prep.document import Document
from data_prep.executor import Stage
from data_prep.executor.local import LocalExecutor
from data_prep.executor.slurm import SlurmExecutor
from data_prep.extract.html import HtmlExtractor
from data_prep.extract.wikitext import WikitextExtractor
from data_prep.failures import InputsFailed, failure_marker, failure_message, failure_result
from data_prep.filters.badwords import BadWordsFilter
from data_prep.filters.base import BaseFilter
from data_prep.filters.c4 import C4Filter
from data_prep.filters.fineweb import FineWebQualityFilter
from data_prep.filters.language import LanguageFilter
from data_prep.filters.pii import PiiRedactor
from data_prep.filters.quality import QualityFilter
from data_prep.filters.repetition import RepetitionFilter
from data_prep.filters.url import UrlFilter
from data_prep.formats import PRE_EXTRACTED
from data_prep.inputs import InputFile, RemoteInputError, expand_inputs, input_name, is_remote, location_of
from data_prep.output_guard import check_same_run, output_lock
from data_prep.readers import READERS
from data_prep.stats import StageStats, merge_tasks, timed
from data_prep.writers.parquet import ParquetWriter, remove_task_outputs
from pipeline.core.errors import InputError
from pipeline.core.files import CONFIG_FILE, atomic_write_json

Progress = Callable[[int], None]
REPORT_EVERY = 200
"""Documents read between progress reports: often enough for a live bar, rare enough to cost nothing."""
STAGES = ("prep", "cluster", "dedup")
DOCS, FILTERED, DEDUP, COMPLETIONS = "docs", "filtered", "dedup", "completions"
KEYS = f"{DEDUP}/keys"


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    """A local absolute path or a URL ("" for the cluster task)."""
    format: str


CLUSTER_TASK = Task("all", "", "")
"""The one task of the ``cluster`` stage."""


def run_prep(cfg: PrepConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every unfinished task of every stage and return the merged stats (also ``stats.json``).

    ``progress(n)`` is called with the number of documents read since its last call.
    Raises FileNotFoundError / ValueError, with one line naming the path, for inputs that are
    missing or of unknown format, or an output written by a run with another config, before
    any work starts. A zero-byte input is not fatal: its task counts one ``read/empty_file`` error.
    Inputs that could not be read even after retries raise InputsFailed once every other input is
    written and stats.json records them.
    """
    start = perf_counter()
    tasks = plan_tasks(cfg)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        check_same_run(out, cfg)
        stages = pending_stages(cfg, tasks)
        stats_path = out / "stats.json"
        if not stages and stats_path.exists():
            return json.loads(stats_path.read_text())
        cfg.save(out / CONFIG_FILE)
        make_executor(cfg).run_stages(stages, progress)
        stats = merged_stats(cfg, tasks, wall_seconds=perf_counter() - start)
        _write_json(stats_path, stats, indent=2)
        failed = {result["path"]: result["error"] for result in stats.get("failed", {}).values()}
        # A rerun redoes only the failed inputs' prep tasks: the others' filtered shards must stay.
        if cfg.dedup.enabled and not cfg.dedup.keep_intermediate and not failed:
            shutil.rmtree(out / FILTERED, ignore_errors=True)
    if failed:
        raise InputsFailed(failure_message(failed, len(tasks)), stats)
    return stats


def pending_stages(cfg: PrepConfig, tasks: list[Task]) -> list[Stage]:
    """The stages with tasks left to do, in order. Redoing a ``prep`` task redoes everything after
    it; so does a missing ``cluster`` marker, and then ``prep`` tasks whose filtered output was
    already cleaned up are redone as well."""
    out = Path(cfg.output)
    prep = [task for task in tasks if not is_done(cfg, "prep", task)]
    stages = [Stage("prep", prep, partial(_run_stage_task, "prep", cfg))]
    if not cfg.dedup.enabled:
        return [stage for stage in stages if stage.tasks]
    redo_cluster = bool(prep) or not is_done(cfg, "cluster", CLUSTER_TASK)
    if redo_cluster:
        for stage in ("cluster", "dedup"):
            shutil.rmtree(out / COMPLETIONS / stage, ignore_errors=True)
        stages[0].tasks = [task for task in tasks if task in prep or not _filtered_intact(cfg, task)]
    for task in stages[0].tasks:  # an earlier run's failure is not this run's (Slurm counts markers)
        failed_marker(out, task).unlink(missing_ok=True)
    stages.append(
        Stage("cluster", [CLUSTER_TASK] if redo_cluster else [], partial(_run_stage_task, "cluster", cfg))
    )
    dedup = [task for task in tasks if redo_cluster or not is_done(cfg, "dedup", task)]
    stages.append(Stage("dedup", dedup, partial(_run_stage_task, "dedup", cfg)))
    return [stage for stage in stages if stage.tasks]


def make_executor(cfg: PrepConfig) -> Any:
    """The executor ``cfg.executor`` names: a local process pool, or Slurm job arrays whose
    files (plans, sbatch scripts, logs/) go to ``<output>/slurm/``."""
    if cfg.executor == "slurm":
        return SlurmExecutor(cfg.slurm, Path(cfg.output) / "slurm", cfg.to_dict(), partial(is_finished, cfg))
    return LocalExecutor(cfg.workers)


def plan_tasks(cfg: PrepConfig) -> list[Task]:
    """One task per input, sorted by name: the order dedup numbers documents in (so the first copy
    kept is the same whatever the worker count or the order the inputs were given in)."""
    tasks = []
    for item in expand_inputs(cfg.input):
        fmt = item.format if cfg.format == "auto" else cfg.format
        if fmt is None:
            raise InputError(
                f"cannot tell the format of {item.location} from its name; pass --format {'|'.join(READERS)}"
            )
        tasks.append(Task(_task_name(item), item.location, fmt))
    return sorted(tasks, key=lambda task: task.name)


def run_stage_task(
    stage: str, cfg: PrepConfig, task: Task, progress: Progress | None = None
) -> dict[str, Any]:
    """Run one task of ``stage`` from scratch and mark it done; returns what its marker holds."""
    if stage == "prep":
        return run_task(task, cfg, progress)
    if stage == "cluster":
        return run_cluster(cfg)
    if stage == "dedup":
        return run_dedup_task(task, cfg)
    raise ValueError(f"unknown data-prep stage {stage!r}; stages: {', '.join(STAGES)}")


def run_task(task: Task, cfg: PrepConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Stage ``prep`` for one input: read, extract, filter, write (and, with dedup on, compute keys)."""
    out = Path(cfg.output)
    docs_dir = out / (FILTERED if cfg.dedup.enabled else DOCS)
    remove_task_outputs(docs_dir, task.name)
    failed_marker(out, task).unlink(missing_ok=True)
    start = perf_counter()
    read_stats = StageStats()
    reader = _read_empty if _is_empty(task.path) else READERS[task.format]
    source = InputFile(task.path, input_name(task.path), task.format, cfg.remote.build())
    docs = timed(reader(source, read_stats), read_stats)
    if progress is not None:
        docs = _reporting(docs, read_stats, progress)
    steps = build_steps(cfg, task.format)
    for step in steps:
        docs = step.run(docs)
    keys = TaskKeys(cfg.dedup) if cfg.dedup.enabled else None
    writer = ParquetWriter(docs_dir, task.name, cfg.docs_per_shard, on_rows=keys.add if keys else None)
    try:
        shards = writer.write(docs)  # deletes what it wrote if the input fails part-way
    except RemoteInputError as exc:
        failed = failure_result(task.path, task.format, exc, perf_counter() - start)
        _write_json(failed_marker(out, task), failed)
        return failed
    stages = {"read": read_stats, **{step.name: step.stats for step in steps}}
    result: dict[str, Any] = {
        "path": str(task.path),
        "format": task.format,
        "shards": [shard.name for shard in shards],
    }
    if keys is not None:
        # The filtered copy is an intermediate: its write is not a stage of the final chain.
        result["docs"] = keys.save(out / KEYS, task.name)
        result["keys_seconds"] = round(keys.seconds, 6)
        result["bytes"] = writer.stats.bytes
    else:
        stages[writer.name] = writer.stats
    result["seconds"] = round(perf_counter() - start, 3)
    result["stages"] = {name: s.to_dict() for name, s in stages.items()}
    _write_json(marker_path(out, "prep", task), result)
    return result


def run_cluster(cfg: PrepConfig) -> dict[str, Any]:
    """Stage ``cluster``: every task's keys -> ``dedup/remove/<task>.npy``."""
    out = Path(cfg.output)
    tasks = [task for task in plan_tasks(cfg) if is_done(cfg, "prep", task)]  # failed inputs are left out
    sizes = [json.loads(marker_path(out, "prep", task).read_text())["docs"] for task in tasks]
    result = plan_removals(out / DEDUP, out / KEYS, [task.name for task in tasks], sizes, cfg.dedup)
    _write_json(marker_path(out, "cluster", CLUSTER_TASK), result)
    return result


def run_dedup_task(task: Task, cfg: PrepConfig) -> dict[str, Any]:
    """Stage ``dedup`` for one input: its filtered shards, in order, minus the removed -> ``docs/``."""
    out = Path(cfg.output)
    docs_dir = out / DOCS
    remove_task_outputs(docs_dir, task.name)
    if not is_done(cfg, "prep", task):  # its input failed: nothing to write, and a rerun redoes it
        return {"seconds": 0.0, "shards": [], "stages": {}}
    start = perf_counter()
    prepped = json.loads(marker_path(out, "prep", task).read_text())
    removal = TaskRemovals.for_task(out / DEDUP, task.name)
    writer = ParquetWriter(docs_dir, task.name, cfg.docs_per_shard)
    filtered = [out / FILTERED / name for name in prepped["shards"]]
    if removal.removes_any or "bytes" not in prepped:
        written = writer.write_tables(removal.kept_rows(filtered))
    else:
        # Rewriting would put the same rows through the same writer: the same bytes. Link them instead
        # (most inputs of a crawl lose no document to dedup), and count what the rewrite would have.
        written = [_link(shard, docs_dir / shard.name) for shard in filtered]
        for stats in (removal.stats, writer.stats):
            stats.input = stats.kept = prepped["docs"]
            stats.bytes = prepped["bytes"]
    # The stage's work is mostly its keys (hashing, MinHash), computed in the prep task: count them here,
    # or the summary shows dedup at 0.00 s and millions of documents a second.
    removal.stats.seconds += prepped.get("keys_seconds", 0.0)
    result = {
        "seconds": round(perf_counter() - start, 3),
        "shards": [shard.name for shard in written],
        "stages": {removal.name: removal.stats.to_dict(), writer.name: writer.stats.to_dict()},
    }
    _write_json(marker_path(out, "dedup", task), result)
    return result


def merged_stats(cfg: PrepConfig, tasks: list[Task], wall_seconds: float) -> dict[str, Any]:
    """stats.json from the markers: each task's prep stages followed by its dedup stages."""
    out = Path(cfg.output)
    results, failed = {}, {}
    for task in tasks:
        if not is_done(cfg, "prep", task):
            results[task.name] = failed[task.name] = json.loads(failed_marker(out, task).read_text())
            continue
        result = json.loads(marker_path(out, "prep", task).read_text())
        if cfg.dedup.enabled:
            dedup = json.loads(marker_path(out, "dedup", task).read_text())
            result = {
                **result,
                "shards": dedup["shards"],
                "seconds": round(result["seconds"] + dedup["seconds"], 3),
                "stages": {**result["stages"], **dedup["stages"]},
            }
        results[task.name] = result
    stats = merge_tasks(results, wall_seconds=wall_seconds)
    if cfg.dedup.enabled:
        stats["cluster"] = json.loads(marker_path(out, "cluster", CLUSTER_TASK).read_text())
    if failed:
        stats["failed"] = {name: {"path": r["path"], "error": r["error"]} for name, r in failed.items()}
    return stats


def is_done(cfg: PrepConfig, stage: str, task: Task) -> bool:
    return marker_path(Path(cfg.output), stage, task).exists()


def is_finished(cfg: PrepConfig, stage: str, task: Task) -> bool:
    """Done, or nothing left to do: the task's input could not be read and its prep task recorded that."""
    return is_done(cfg, stage, task) or failed_marker(Path(cfg.output), task).exists()


def marker_path(out: Path, stage: str, task: Task) -> Path:
    """``<output>/completions/<stage>/<task>.done``: written last by a task, holding its stats."""
    return out / COMPLETIONS / stage / f"{task.name}.done"


def failed_marker(out: Path, task: Task) -> Path:
    """Where a prep task records the inputs it could not read (beside its done marker, never both)."""
    return failure_marker(marker_path(out, "prep", task))


def _filtered_intact(cfg: PrepConfig, task: Task) -> bool:
    """The task's filtered shards and keys are still on disk (not cleaned up after an earlier run); a task
    that kept no document has neither."""
    out = Path(cfg.output)
    marker = json.loads(marker_path(out, "prep", task).read_text())
    return all((out / FILTERED / name).exists() for name in marker["shards"]) and (
        marker["docs"] == 0 or keys_path(out / KEYS, task.name).exists()
    )


def _link(source: Path, target: Path) -> Path:
    """``target`` as a hard link to ``source`` (a copy where the file system has none)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def build_steps(cfg: PrepConfig, fmt: str) -> list[BaseFilter]:
    """The stages after the reader, in order; a disabled stage is absent. URL and C4 act only on
    the sources their config names, so every task has the same stages and stats merge cleanly.
    Raises FileNotFoundError, in one line, for a list file the config names and the disk lacks."""
    steps: list[BaseFilter] = (
        [] if fmt in PRE_EXTRACTED else [HtmlExtractor(cfg.extract) if fmt == "warc" else WikitextExtractor()]
    )
    if cfg.url.enabled and cfg.url.has_lists:
        steps.append(UrlFilter(cfg.url))
    # FineWeb's order: language first (the text rules are English ones: stop words, end marks), then
    # Gopher repetition and quality on the extracted text, then C4's line clean-up, then FineWeb's rules.
    if cfg.language.enabled:
        steps.append(LanguageFilter(cfg.language))
    if cfg.repetition.enabled:
        steps.append(RepetitionFilter(cfg.repetition))
    if cfg.quality.enabled:
        steps.append(QualityFilter(cfg.quality))
    if cfg.c4.enabled:
        steps.append(C4Filter(cfg.c4))
    if cfg.fineweb.enabled:
        steps.append(FineWebQualityFilter(cfg.fineweb))
    if cfg.badwords.enabled:
        steps.append(BadWordsFilter(cfg.badwords))
    if cfg.pii.enabled:
        steps.append(PiiRedactor(cfg.pii))
    return steps


def _is_empty(location: str) -> bool:
    return not is_remote(location) and os.path.isfile(location) and os.path.getsize(location) == 0


def _read_empty(source: InputFile, stats: StageStats) -> Iterator[Document]:
    """The reader of a zero-byte file: one input, one ``empty_file`` error, no documents."""
    stats.input += 1
    stats.error("empty_file", f"{location_of(source)}:0")
    yield from ()


def _task_name(item: InputFile) -> str:
    """The file name (readable in docs/ and completions/) plus a hash of its full path or URL (unique)."""
    digest = hashlib.sha1(item.location.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', item.name)}-{digest}"


def _write_json(path: Path, data: dict[str, Any], indent: int | None = None) -> None:
    """Temp file + rename: a reader sees the old file or the new one, never half of one. Markers are
    for the code (one line, encoded in C); ``stats.json`` is for people (``indent=2``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data, indent)


def _reporting(docs: Iterator[Document], read_stats: StageStats, progress: Progress) -> Iterator[Document]:
    reported = 0
    for doc in docs:
        if read_stats.input - reported >= REPORT_EVERY:
            progress(read_stats.input - reported)
            reported = read_stats.input
        yield doc
    if read_stats.input > reported:
        progress(read_stats.input - reported)


def _run_stage_task(stage: str, cfg: PrepConfig, task: Task, progress: Progress | None) -> None:
    """``run_stage_task`` in the executors' ``fn(task, progress)`` shape (module level: a pool pickles it)."""
    run_stage_task(stage, cfg, task, progress)
