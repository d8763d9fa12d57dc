"""``lmpipe data prep``: web crawls, dumps and document files -> ``docs/*.parquet`` + ``stats.json``.

One task per input (a local file or a URL) runs read -> extract -> url -> c4 ->
quality -> repetition -> language -> badwords -> pii -> exact dedup -> write, each
document streaming through every enabled stage, so memory does not grow with the
file. Pre-extracted formats (WET, JSONL, Parquet, HF datasets) skip extraction.
Quality runs before language so junk is dropped as junk rather than as "no language".

Resume (DESIGN §4): a finished task leaves ``completions/<task>.done``, written
last and holding the task's stats. A rerun skips finished tasks, and redoes any
other from scratch after deleting what an interrupted run of it left in ``docs/``.
``stats.json`` is merged from the markers, so it covers all tasks whichever run did
them; when every task is already done the rerun changes nothing.

Tasks run on an executor (``data_prep.executor``, chosen by ``cfg.executor``): here, in
``workers`` processes, or as one Slurm job array whose elements each run one task. Either
way the markers are the record of what finished, and this process merges ``stats.json``.

Exact dedup is per task for now: a page repeated in two input files is kept once
per file. Cross-task dedup is MinHash's job (``data_prep.dedup.minhash``: signatures
per task -> cluster over all -> removal), not yet wired into this runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Iterator

from data_prep.config import PrepConfig
from data_prep.dedup.exact import ExactDedupFilter
from data_prep.document import Document
from data_prep.extract.html import HtmlExtractor
from data_prep.extract.wikitext import WikitextExtractor
from data_prep.filters.badwords import BadWordsFilter
from data_prep.filters.base import BaseFilter
from data_prep.filters.c4 import C4Filter
from data_prep.filters.language import LanguageFilter
from data_prep.filters.pii import PiiRedactor
from data_prep.filters.quality import QualityFilter
from data_prep.filters.repetition import RepetitionFilter
from data_prep.filters.url import UrlFilter
from data_prep.inputs import InputFile, expand_inputs, is_remote
from data_prep.readers import PRE_EXTRACTED, READERS
from data_prep.stats import StageStats, merge_tasks, timed
from data_prep.writers.parquet import ParquetWriter, task_outputs

Progress = Callable[[int], None]
REPORT_EVERY = 200
"""Documents read between progress reports: often enough for a live bar, rare enough to cost nothing."""


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    """A local absolute path or a URL."""
    format: str


def run_prep(cfg: PrepConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every unfinished task and return the merged stats (also written to ``stats.json``).

    ``progress(n)`` is called with the number of documents read since its last call.
    Raises FileNotFoundError / ValueError, with one line naming the path, for inputs
    that are missing or of unknown format, before any work starts. A zero-byte input is
    not fatal: its task counts one ``read/empty_file`` error.
    """
    start = perf_counter()
    tasks = plan_tasks(cfg)
    out = Path(cfg.output)
    stats_path = out / "stats.json"
    pending = [task for task in tasks if not _marker(out, task).exists()]
    if not pending and stats_path.exists():
        return json.loads(stats_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    make_executor(cfg).run(pending, partial(_run_one, cfg), progress)
    results = {task.name: json.loads(_marker(out, task).read_text()) for task in tasks}
    stats = merge_tasks(results, wall_seconds=perf_counter() - start)
    _write_json(stats_path, stats)
    return stats


def make_executor(cfg: PrepConfig) -> Any:
    """The executor ``cfg.executor`` names: a local process pool, or a Slurm job array whose
    files (plan.json, prep.sbatch, logs/) go to ``<output>/slurm/``."""
    if cfg.executor == "slurm":
        from data_prep.executor.slurm import SlurmExecutor

        out = Path(cfg.output)
        return SlurmExecutor(cfg.slurm, out / "slurm", cfg.to_dict(), lambda task: _marker(out, task).exists())
    from data_prep.executor.local import LocalExecutor

    return LocalExecutor(cfg.workers)


def plan_tasks(cfg: PrepConfig) -> list[Task]:
    tasks = []
    for item in expand_inputs(cfg.input):
        fmt = item.format if cfg.format == "auto" else cfg.format
        if fmt is None:
            raise ValueError(f"cannot tell the format of {item.location} from its name; "
                             f"pass --format {'|'.join(READERS)}")
        tasks.append(Task(_task_name(item), item.location, fmt))
    return tasks


def run_task(task: Task, cfg: PrepConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Process one input file from scratch and mark it done; returns its stats."""
    out = Path(cfg.output)
    docs_dir = out / "docs"
    for leftover in task_outputs(docs_dir, task.name):
        leftover.unlink()
    start = perf_counter()
    read_stats = StageStats()
    reader = _read_empty if _is_empty(task.path) else READERS[task.format]
    docs = timed(reader(task.path, read_stats), read_stats)
    if progress is not None:
        docs = _reporting(docs, read_stats, progress)
    steps = build_steps(cfg, task.format)
    for step in steps:
        docs = step.run(docs)
    writer = ParquetWriter(docs_dir, task.name, cfg.docs_per_shard)
    shards = writer.write(docs)
    stages = {"read": read_stats, **{step.name: step.stats for step in steps}, writer.name: writer.stats}
    result = {"path": str(task.path), "format": task.format, "seconds": round(perf_counter() - start, 3),
              "shards": [shard.name for shard in shards], "stages": {n: s.to_dict() for n, s in stages.items()}}
    _write_json(_marker(out, task), result)
    return result


def build_steps(cfg: PrepConfig, fmt: str) -> list[BaseFilter]:
    """The stages after the reader, in order; a disabled stage is absent. URL and C4 act only on
    the sources their config names, so every task has the same stages and stats merge cleanly.
    Raises FileNotFoundError, in one line, for a list file the config names and the disk lacks."""
    steps: list[BaseFilter] = [] if fmt in PRE_EXTRACTED else [HtmlExtractor() if fmt == "warc" else WikitextExtractor()]
    if cfg.url.enabled and cfg.url.has_lists:
        steps.append(UrlFilter(cfg.url))
    if cfg.c4.enabled:
        steps.append(C4Filter(cfg.c4))
    if cfg.quality.enabled:
        steps.append(QualityFilter(cfg.quality))
    if cfg.repetition.enabled:
        steps.append(RepetitionFilter(cfg.repetition))
    if cfg.language.enabled:
        steps.append(LanguageFilter(cfg.language))
    if cfg.badwords.enabled:
        steps.append(BadWordsFilter(cfg.badwords))
    if cfg.pii.enabled:
        steps.append(PiiRedactor(cfg.pii))
    if cfg.exact_dedup:
        steps.append(ExactDedupFilter())
    return steps


def _is_empty(location: str) -> bool:
    return not is_remote(location) and os.path.isfile(location) and os.path.getsize(location) == 0


def _read_empty(location: str, stats: StageStats) -> Iterator[Document]:
    """The reader of a zero-byte file: one input, one ``empty_file`` error, no documents."""
    stats.input += 1
    stats.error("empty_file", f"{location}:0")
    yield from ()


def _task_name(item: InputFile) -> str:
    """The file name (readable in docs/ and completions/) plus a hash of its full path or URL (unique)."""
    digest = hashlib.sha1(item.location.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', item.name)}-{digest}"


def marker_path(out: Path, task: Task) -> Path:
    """``<output>/completions/<task>.done``: written last by ``run_task``, holding the task's stats."""
    return out / "completions" / f"{task.name}.done"


_marker = marker_path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Temp file + rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(temp, path)


def _reporting(docs: Iterator[Document], read_stats: StageStats, progress: Progress) -> Iterator[Document]:
    reported = 0
    for doc in docs:
        if read_stats.input - reported >= REPORT_EVERY:
            progress(read_stats.input - reported)
            reported = read_stats.input
        yield doc
    if read_stats.input > reported:
        progress(read_stats.input - reported)


def _run_one(cfg: PrepConfig, task: Task, progress: Progress | None) -> None:
    """``run_task`` in the executors' ``fn(task, progress)`` shape (module level, so a pool can pickle it)."""
    run_task(task, cfg, progress)
