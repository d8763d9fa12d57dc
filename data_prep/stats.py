"""What each data-prep stage did to the documents, per task and merged into ``stats.json``.

Every stage counts the same things (DESIGN §4): documents in, kept, dropped by
reason, errors by kind with ``file:offset``-style examples, UTF-8 bytes of what it
kept, and the seconds spent in its own work. Each stage's input is the previous
stage's ``kept``, so ``input = kept + dropped + errors`` holds for every stage and
for the whole run; ``totals`` states it once, under ``stage/reason`` keys.

stats.json::

    {"totals": {"input": .., "kept": .., "dropped": {"read/not_html": ..}, "errors": {..},
                "bytes_in": .., "bytes_out": .., "seconds": .., "docs_per_second": ..},
     "stages": {"read": {"input": .., "kept": .., "dropped": {..}, "errors": {kind: {"count", "examples"}},
                         "bytes": .., "seconds": .., "counts": {..}}, "extract": {..}, .., "write": {..}},
     "tasks": {"<task>": {"path": .., "format": .., "input": .., "kept": .., "seconds": ..}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

T = TypeVar("T")
MAX_EXAMPLES = 5
"""Examples kept per error kind: enough to find the bad records, small enough to read."""


@dataclass
class StageStats:
    input: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes: int = 0
    """UTF-8 bytes of the text this stage kept (raw payload for the reader)."""
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    """What a transforming stage changed inside the documents it kept, e.g. ``lines_removed``, ``emails``."""

    def keep(self, n_bytes: int) -> None:
        self.kept += 1
        self.bytes += n_bytes

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, kind: str, where: str) -> None:
        entry = self.errors.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < MAX_EXAMPLES:
            entry["examples"].append(where)

    def merge(self, other: StageStats) -> None:
        self.input += other.input
        self.kept += other.kept
        self.bytes += other.bytes
        self.seconds += other.seconds
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        for name, count in other.counts.items():
            self.count(name, count)
        for kind, entry in other.errors.items():
            mine = self.errors.setdefault(kind, {"count": 0, "examples": []})
            mine["count"] += entry["count"]
            mine["examples"] = (mine["examples"] + entry["examples"])[:MAX_EXAMPLES]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "errors": dict(sorted(self.errors.items())),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "counts": dict(sorted(self.counts.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageStats:
        return cls(
            data["input"],
            data["kept"],
            dict(data["dropped"]),
            {
                kind: {"count": e["count"], "examples": list(e["examples"])}
                for kind, e in data["errors"].items()
            },
            data["bytes"],
            data["seconds"],
            dict(data.get("counts", {})),
        )


def utf8_length(text: str) -> int:
    """``len(text.encode())`` without the copy for ASCII text (most of it); a lone surrogate (from
    JSON escapes) counts as its 3 bytes instead of raising."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def timed(items: Iterable[T], stats: StageStats) -> Iterator[T]:
    """Charge the time spent producing each item to ``stats`` (for the reader, the one stage
    that is a source: later stages time their own per-document work)."""
    iterator = iter(items)
    while True:
        start = perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            stats.seconds += perf_counter() - start
            return
        stats.seconds += perf_counter() - start
        yield item


def _stage_order(sequences: list[list[str]]) -> list[str]:
    """Every stage name, each after the stages that precede it in any task (tasks share one chain,
    some skip stages of it)."""
    order: list[str] = []
    for names in sequences:
        for i, name in enumerate(names):
            if name not in order:
                before = [n for n in names[:i] if n in order]
                order.insert(order.index(before[-1]) + 1 if before else 0, name)
    return order


def _passed_through(previous: StageStats | None) -> StageStats:
    kept = previous.kept if previous is not None else 0
    return StageStats(input=kept, kept=kept, bytes=previous.bytes if previous is not None else 0)


def merge_tasks(tasks: dict[str, dict[str, Any]], wall_seconds: float | None = None) -> dict[str, Any]:
    """Per-task results (each ``{"path", "format", "seconds", "stages"}``) -> the stats.json dict."""
    order = _stage_order([list(result["stages"]) for result in tasks.values()])
    stages: dict[str, StageStats] = {name: StageStats() for name in order}
    for result in tasks.values():
        previous: StageStats | None = None
        for name in order:
            data = result["stages"].get(name)
            # A stage a task does not have (extraction, for a WET or JSONL input) passed everything on.
            stage = StageStats.from_dict(data) if data is not None else _passed_through(previous)
            stages[name].merge(stage)
            previous = stage
    ordered = list(stages.values()) or [StageStats()]
    first, last = ordered[0], ordered[-1]
    seconds = sum(result["seconds"] for result in tasks.values())
    totals = {
        "input": first.input,
        "kept": last.kept,
        "dropped": {
            f"{name}/{reason}": n for name, s in stages.items() for reason, n in sorted(s.dropped.items())
        },
        "errors": {
            f"{name}/{kind}": e["count"] for name, s in stages.items() for kind, e in sorted(s.errors.items())
        },
        "bytes_in": first.bytes,
        "bytes_out": last.bytes,
        "seconds": round(seconds, 3),
        "docs_per_second": round(first.input / seconds, 1) if seconds else 0.0,
    }
    if wall_seconds is not None:
        totals["wall_seconds"] = round(wall_seconds, 3)
    summary = {}
    for name, result in sorted(tasks.items()):
        task_stages = list(result["stages"].values())
        summary[name] = {
            "path": result["path"],
            "format": result["format"],
            "input": task_stages[0]["input"],
            "kept": task_stages[-1]["kept"],
            "seconds": result["seconds"],
        }
    return {"totals": totals, "stages": {name: s.to_dict() for name, s in stages.items()}, "tasks": summary}
