"""Loader resume across a world-size change, on real gloo process groups.

4 ranks take k steps and rank 0 saves the loader state; 2 ranks load it and go on. Together
they must have seen exactly the samples of an uninterrupted 2-rank run over the same total:
none skipped, none twice. Once over one source, once over a mixture whose small source repeats.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch.distributed as dist

from pipeline.testing import run_distributed_test, write_random_shards
from pipeline.train.data import TokenLoader
from pipeline.train.mixture import SourceSpec

pytestmark = pytest.mark.distributed

SEQ_LEN, BATCH, SEED = 16, 2, 11
FIRST_STEPS, LATER_STEPS = 3, 5  # 4 ranks x 3 steps x 2 = 24 samples, then 2 ranks x 5 x 2 = 20


def configs(root: Path) -> dict[str, list[SourceSpec]]:
    return {
        "single": [SourceSpec("all", str(root))],
        "mixture": [SourceSpec("cc", str(root), "cc", 0.5), SourceSpec("wiki", str(root), "wiki", 0.5)],
    }


def make_loader(sources: list[SourceSpec], rank: int, world_size: int) -> TokenLoader:
    return TokenLoader(
        sources=sources,
        seq_len=SEQ_LEN,
        batch_size=BATCH,
        rank=rank,
        world_size=world_size,
        seed=SEED,
        block_size=8,
    )


def run_phase(root: str, steps: int, state_dir: str, load: bool) -> dict[str, list]:
    """On each rank: every config's loader for ``steps`` steps; returns all ranks' rows (gathered over
    gloo)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    seen = {}
    for name, sources in configs(Path(root)).items():
        loader = make_loader(sources, rank, world_size)
        state_file = Path(state_dir) / f"{name}.json"
        if load:
            loader.load_state_dict(json.loads(state_file.read_text()))
        iterator = iter(loader)
        rows = [tuple(row.tolist()) for _ in range(steps) for row in next(iterator)[0]]
        gathered, states = [None] * world_size, [None] * world_size
        dist.all_gather_object(gathered, rows)
        dist.all_gather_object(states, loader.state_dict())
        assert all(state == states[0] for state in states), "ranks disagree on the loader state"
        if rank == 0 and not load:
            state_file.write_text(json.dumps(states[0]))
        dist.barrier()
        seen[name] = [row for rank_rows in gathered for row in rank_rows]
    return seen


def test_resume_from_4_ranks_on_2_ranks_sees_each_sample_once(tmp_path):
    root = tmp_path / "data"
    write_random_shards(root, {"train": [300] * 4 + [25] * 4}, vocab_size=1000)  # cc 74 windows, wiki 6
    first = run_distributed_test(
        run_phase, world_size=4, root=str(root), steps=FIRST_STEPS, state_dir=str(tmp_path), load=False
    )[0]
    later = run_distributed_test(
        run_phase, world_size=2, root=str(root), steps=LATER_STEPS, state_dir=str(tmp_path), load=True
    )[0]
    for name, sources in configs(root).items():
        ranks = [
            iter(make_loader(sources, rank, 2)) for rank in range(2)
        ]  # the uninterrupted run, in-process
        uninterrupted = [
            tuple(row.tolist())
            for _ in range(FIRST_STEPS * 2 + LATER_STEPS)
            for it in ranks
            for row in next(it)[0]
        ]
        resumed = first[name] + later[name]
        assert len(resumed) == len(uninterrupted) == 44
        assert Counter(resumed) == Counter(uninterrupted), name
        if name == "single":
            assert len(set(resumed)) == 44  # within one epoch: no sample twice
        else:
            assert max(Counter(resumed).values()) > 1  # the small source does repeat, as it should
