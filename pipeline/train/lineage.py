"""Data lineage in MLflow: which token shards a run trained or was evaluated on, and which runs
evaluated a checkpoint.

The shards go in as an MLflow dataset input, so the runs table's Dataset column names the data:
the name is the shards directory's, the digest is the start of the manifest's sha256 (a re-tokenized
or re-mixed directory gets another digest, even under the same name), the source says where the
directory lies and which sources it mixes, the profile carries the manifest's token and document
counts. Nothing of the data itself is uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.core.files import file_sha256
from pipeline.train.tracking import Tracker

DIGEST_LENGTH = 16
"""Hex characters of the manifest's sha256 shown as the dataset's digest (MLflow takes at most 36)."""
CONTEXT_TAG = "mlflow.data.context"
"""The input tag the runs table shows beside the dataset's name (``train``, ``eval``)."""
EVAL_RUNS_TAG = "eval_run_ids"
"""On a checkpoint's run: the runs that evaluated its checkpoints, comma separated."""


def shards_dataset(directory: str | Path) -> Any:
    """The MLflow dataset entity that stands for a token shards directory (see the module doc)."""
    from mlflow.entities import Dataset

    directory = Path(directory).resolve()
    manifest = load_manifest(directory)
    totals = manifest["totals"]
    source = {"path": str(directory), "sources": sorted(totals.get("by_source", {}))}
    profile = {
        "tokens": totals["tokens"],
        "docs": totals["docs"],
        "by_split": totals.get("by_split", {}),
        "by_source": totals.get("by_source", {}),
        "tokenizer_sha256": manifest["tokenizer"]["sha256"],
        "mixture": manifest.get("mixture"),
    }
    return Dataset(
        name=directory.name,
        digest=file_sha256(directory / MANIFEST_FILE)[:DIGEST_LENGTH],
        source_type="local",
        source=json.dumps(source),
        profile=json.dumps(profile),
    )


def log_shards_inputs(tracker: Tracker, directories: Iterable[str | Path], *, context: str) -> None:
    """Log each shards directory as a dataset input of the tracker's run, tagged ``context``."""
    if tracker.run_id is None:
        return
    from mlflow.entities import DatasetInput, InputTag

    inputs = [
        DatasetInput(shards_dataset(directory), tags=[InputTag(CONTEXT_TAG, context)])
        for directory in directories
    ]
    log_inputs_racing(tracker.client, tracker.run_id, inputs)


def log_inputs_racing(client: Any, run_id: str, inputs: list[Any], attempts: int = 3) -> None:
    """``client.log_inputs``, safe when several runs log the same dataset at once (a sweep's array
    elements on one store).

    MLflow's SQL store looks a dataset up and inserts it if absent in one transaction, but two runs can
    both miss it and the second insert breaks the (experiment, name, digest) uniqueness: the whole call
    rolls back. Called again, the lookup finds the dataset the other run stored, and only this run's
    input link is written, so a retry is both safe and sufficient.
    """
    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as exc:
            # MLflow's message carries the database's error, from a SQL store here or a tracking server.
            if attempt + 1 == attempts or "IntegrityError" not in str(exc):
                raise


def link_eval_run(client: Any, checkpoint_run_id: str, eval_run_id: str) -> None:
    """Add ``eval_run_id`` to the checkpoint run's ``eval_run_ids`` tag (the eval run already names the
    checkpoint and its run in its own tags), so either run leads to the other."""
    tags = client.get_run(checkpoint_run_id).data.tags
    known = [run for run in tags.get(EVAL_RUNS_TAG, "").split(",") if run]
    if eval_run_id not in known:
        client.set_tag(checkpoint_run_id, EVAL_RUNS_TAG, ",".join([*known, eval_run_id]))
