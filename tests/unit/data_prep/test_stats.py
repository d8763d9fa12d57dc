"""Per-stage counts merge across tasks, and the totals account for every input record."""

from __future__ import annotations

import time

from data_prep.stats import MAX_EXAMPLES, StageStats, merge_tasks, timed


def task(inputs: int, bad: int, dropped: int, path: str) -> dict:
    read = StageStats(input=inputs, kept=inputs - bad, bytes=100 * (inputs - bad))
    for i in range(bad):
        read.error("corrupt_stream", f"{path}:{i}")
    quality = StageStats(input=inputs - bad, kept=inputs - bad - dropped, dropped={"too_few_words": dropped})
    return {
        "path": path,
        "format": "warc",
        "seconds": 1.0,
        "stages": {"read": read.to_dict(), "quality": quality.to_dict()},
    }


def test_merge_sums_stages_and_totals_add_up():
    stats = merge_tasks({"a": task(10, 4, 2, "a.warc"), "b": task(20, 3, 5, "b.warc")})
    totals = stats["totals"]
    assert totals["input"] == 30 and totals["kept"] == 16
    assert totals["dropped"] == {"quality/too_few_words": 7}
    assert totals["errors"] == {"read/corrupt_stream": 7}
    assert totals["input"] == totals["kept"] + sum(totals["dropped"].values()) + sum(
        totals["errors"].values()
    )
    assert stats["stages"]["read"]["errors"]["corrupt_stream"]["count"] == 7
    assert len(stats["stages"]["read"]["errors"]["corrupt_stream"]["examples"]) == MAX_EXAMPLES
    assert stats["tasks"]["b"] == {
        "path": "b.warc",
        "format": "warc",
        "input": 20,
        "kept": 12,
        "seconds": 1.0,
    }
    assert totals["docs_per_second"] == 15.0


def test_stage_stats_round_trip_through_json_dicts():
    stats = StageStats(input=3, kept=1, bytes=5, seconds=0.5)
    stats.drop("x")
    stats.error("bad", "f:1")
    assert StageStats.from_dict(stats.to_dict()) == stats


def test_timed_charges_only_the_time_spent_producing_items():
    def slow_source():
        for i in range(3):
            time.sleep(0.005)
            yield i

    stats = StageStats()
    for _ in timed(slow_source(), stats):
        time.sleep(0.05)  # the consumer's time is not the source's
    assert 0.015 <= stats.seconds < 0.1
