"""``data prep`` as real Slurm job arrays (``executor: slurm``): prep -> cluster -> dedup chained by
``afterok`` dependencies write the same docs and stats as a local run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from data_prep.config import PrepConfig
from data_prep.executor import Stage, TaskFailed
from data_prep.executor.slurm import SlurmExecutor
from data_prep.prep import Task, is_done, run_prep
from pipeline.demo.corpus import generate_split_corpus

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    return [
        str(path)
        for path in generate_split_corpus(tmp_path_factory.mktemp("inputs"), web_files=3, n_entities=40)
    ]


def config(inputs: list[str], output: Path, *overrides: str) -> PrepConfig:
    return PrepConfig.load(None, list(overrides), values={"input": inputs, "output": str(output)})


def docs(output: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((output / "docs").iterdir())}


def without_timing(totals: dict) -> dict:
    return {k: v for k, v in totals.items() if k not in ("seconds", "docs_per_second", "wall_seconds")}


def test_job_array_writes_what_a_local_run_writes(local_slurm, inputs, tmp_path, monkeypatch):
    local = run_prep(config(inputs, tmp_path / "local", "workers=2"))
    cfg = config(
        inputs,
        tmp_path / "slurm",
        "executor=slurm",
        "slurm.max_parallel=2",
        "slurm.poll_seconds=0.5",
        "slurm.time=10",
        "slurm.timeout_minutes=5",
    )
    stats = run_prep(cfg)
    slurm_dir = tmp_path / "slurm" / "slurm"
    logs = "\n".join(p.read_text() for p in sorted((slurm_dir / "logs").glob("*.out")))
    assert docs(tmp_path / "slurm") == docs(tmp_path / "local"), f"{logs}\n{local_slurm.logs()}"
    assert len(docs(tmp_path / "local")) == 4
    assert without_timing(stats["totals"]) == without_timing(local["totals"])
    assert stats["totals"]["kept"] > 0 and stats["cluster"]["removed"] == local["cluster"]["removed"]
    script = (slurm_dir / "prep" / "prep.sbatch").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --time=10" in script
    plan = json.loads((slurm_dir / "prep" / "plan.json").read_text())
    assert len(plan["tasks"]) == 4 and plan["config"]["output"] == str(tmp_path / "slurm")
    jobs = {}
    for stage, elements in (("prep", 4), ("cluster", 1), ("dedup", 4)):
        job_ids = {
            p.name.rsplit("-", 1)[1].split("_")[0]
            for p in (slurm_dir / "logs").glob(f"lmpipe-{stage}-*_*.out")
        }
        assert len(job_ids) == 1, (stage, job_ids)
        jobs[stage] = job_ids.pop()
        for index in range(elements):  # every array element ran and finished its task
            assert (
                "done:" in (slurm_dir / "logs" / f"lmpipe-{stage}-{jobs[stage]}_{index}.out").read_text()
            ), logs
    assert (
        f"#SBATCH --dependency=afterok:{jobs['prep']}"
        in (slurm_dir / "cluster" / "cluster.sbatch").read_text()
    )
    assert (
        f"#SBATCH --dependency=afterok:{jobs['cluster']}"
        in (slurm_dir / "dedup" / "dedup.sbatch").read_text()
    )

    def no_submit(self):
        raise AssertionError("a rerun with every task done must not submit")

    monkeypatch.setattr(SlurmExecutor, "submit", no_submit)
    assert run_prep(cfg) == stats
    (tmp_path / "slurm" / "stats.json").unlink()  # stats are re-merged from the markers, still no job
    again = run_prep(cfg)
    assert without_timing(again["totals"]) == without_timing(stats["totals"])
    assert docs(tmp_path / "slurm") == docs(tmp_path / "local")


def test_failed_element_names_its_log_and_cancels_the_stages_after_it(local_slurm, inputs, tmp_path):
    cfg = config(
        inputs[:1],
        tmp_path / "out",
        "executor=slurm",
        "slurm.poll_seconds=0.5",
        "slurm.time=10",
        "slurm.timeout_minutes=5",
    )
    out = Path(cfg.output)
    tasks = [Task("good", inputs[0], "warc"), Task("missing", str(tmp_path / "gone.warc.gz"), "warc")]
    executor = SlurmExecutor(
        cfg.slurm, out / "slurm", cfg.to_dict(), lambda stage, task: is_done(cfg, stage, task)
    )
    with pytest.raises(TaskFailed) as failure:
        executor.run_stages([Stage("prep", tasks), Stage("dedup", tasks)])
    log = out / "slurm" / "logs" / f"lmpipe-prep-{executor.job_ids['prep']}_1.out"
    assert (
        str(failure.value) == f"1 of 2 prep task(s) of Slurm job {executor.job_ids['prep']} failed; see {log}"
    )
    assert "gone.warc.gz" in log.read_text()  # the traceback is in the element's log
    assert is_done(cfg, "prep", tasks[0])  # the other element finished its task
    assert not list((out / "slurm" / "logs").glob("lmpipe-dedup-*"))  # its dependency failed: it never ran
