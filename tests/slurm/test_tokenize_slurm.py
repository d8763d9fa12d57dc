"""``data tokenize`` as a real Slurm job array (``executor: slurm``): the shards are byte-identical to
a local run's, each element logs its task, and a rerun with every task done submits nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.executor.slurm import SlurmExecutor
from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.tokenize import tokenize
from data_prep.tokenizer.train import train_tokenizer

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
WORDS = ["the", "river", "city", "東京", "café", "model", "history", "small", "🙂", "<|eos|>", "data", "1887"]


@pytest.fixture(scope="module")
def docs_and_tokenizer(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    rng = random.Random(0)
    (root / "docs").mkdir()
    for f in range(3):
        ids = [f"{f}/{i}" for i in range(80)]
        pq.write_table(
            pa.table(
                {
                    "id": ids,
                    "text": [" ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for _ in ids],
                    "source": [rng.choice(["cc", "wiki"]) for _ in ids],
                    "url": ["" for _ in ids],
                    "metadata": ["{}" for _ in ids],
                }
            ),
            root / "docs" / f"{f:05d}.parquet",
        )
    train_tokenizer(
        TokenizerTrainConfig(input=str(root), output=str(root / "tok"), vocab_size=300, min_frequency=1)
    )
    return root, root / "tok"


def config(docs: Path, tokenizer: Path, output: Path, *overrides: str) -> TokenizeConfig:
    return TokenizeConfig.load(
        None,
        ["val_fraction=0.2", "shard_size_bytes=1500", *overrides],
        values={"input": [str(docs)], "tokenizer": str(tokenizer), "output": str(output)},
    )


def shards(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "shards").iterdir())}


def test_job_array_writes_the_shards_a_local_run_writes(
    local_slurm, docs_and_tokenizer, tmp_path, monkeypatch
):
    docs, tokenizer = docs_and_tokenizer
    local = tokenize(config(docs, tokenizer, tmp_path / "local", "workers=2"))
    cfg = config(
        docs,
        tokenizer,
        tmp_path / "slurm",
        "executor=slurm",
        "slurm.max_parallel=2",
        "slurm.poll_seconds=0.5",
        "slurm.time=10",
        "slurm.timeout_minutes=5",
    )
    manifest = tokenize(cfg)
    slurm_dir = tmp_path / "slurm" / "slurm"
    logs = "\n".join(p.read_text() for p in sorted((slurm_dir / "logs").glob("*.out")))
    assert shards(tmp_path / "slurm") == shards(tmp_path / "local"), f"{logs}\n{local_slurm.logs()}"
    assert len(shards(tmp_path / "local")) > 6
    assert manifest["shards"] == local["shards"] and manifest["totals"] == local["totals"]
    assert manifest["totals"]["skipped_empty"] > 0
    script = (slurm_dir / "tokenize" / "tokenize.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in script and "-m launch.slurm.task" in script
    plan = json.loads((slurm_dir / "tokenize" / "plan.json").read_text())
    assert plan["stage"] == "tokenize" and [task["index"] for task in plan["tasks"]] == [0, 1, 2]
    [job] = {
        p.name.rsplit("-", 1)[1].split("_")[0] for p in (slurm_dir / "logs").glob("lmpipe-tokenize-*_*.out")
    }
    for index in range(3):
        assert "done:" in (slurm_dir / "logs" / f"lmpipe-tokenize-{job}_{index}.out").read_text(), logs

    def no_submit(self, *args):
        raise AssertionError("a rerun with every task done must not submit")

    monkeypatch.setattr(SlurmExecutor, "submit", no_submit)
    assert tokenize(cfg)["shards"] == manifest["shards"]
