"""MLflow lineage against a real sqlite store: the shards a run used as its dataset input, experiments
tagged for the model-training view, and an eval run and its checkpoint's run naming each other."""

from __future__ import annotations

import json

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.eval import EvalJobConfig
from pipeline.config.train import TrackingConfig
from pipeline.core.files import file_sha256
from pipeline.eval.evaluate import evaluate
from pipeline.train.checkpoint import resolve_checkpoint
from pipeline.train.lineage import EVAL_RUNS_TAG, log_inputs_racing, log_shards_inputs
from pipeline.train.pretrain import train
from pipeline.train.tracking import EXPERIMENT_KIND, Tracker


def test_shards_are_the_runs_dataset_input(tiny_corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    shards = tiny_corpus[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(
        TrackingConfig(uri=uri, experiment="lineage"), output_dir=tmp_path, params={}, tags={}
    )
    log_shards_inputs(tracker, [shards], context="train")
    tracker.finish()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lineage")
    assert experiment.tags["mlflow.experimentKind"] == EXPERIMENT_KIND["mlflow.experimentKind"]
    (logged,) = client.get_run(tracker.run_id).inputs.dataset_inputs
    manifest = load_manifest(shards)
    assert logged.dataset.name == shards.name
    assert logged.dataset.digest == file_sha256(shards / MANIFEST_FILE)[:16]
    assert {tag.key: tag.value for tag in logged.tags} == {"mlflow.data.context": "train"}
    source = json.loads(logged.dataset.source)
    assert source["path"] == str(shards.resolve())
    assert source["sources"] == sorted(manifest["totals"]["by_source"]) and source["sources"]
    profile = json.loads(logged.dataset.profile)
    assert profile["tokens"] == manifest["totals"]["tokens"] > 0
    assert profile["by_split"]["val"]["tokens"] == manifest["totals"]["by_split"]["val"]["tokens"]
    # The runs table's Dataset column reads the inputs off search results too.
    (found,) = client.search_runs([experiment.experiment_id])
    assert [d.dataset.name for d in found.inputs.dataset_inputs] == [shards.name]


def test_an_existing_experiment_gets_the_kind_but_a_chosen_kind_stays(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("old")
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("old", "chosen"):
        Tracker.start(
            TrackingConfig(uri=uri, experiment=name), output_dir=tmp_path, params={}, tags={}
        ).finish()
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_eval_run_and_checkpoint_run_name_each_other(train_config, tiny_corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = train_config("train.max_steps=2", "tracking.enabled=true", f"tracking.uri={uri}")
    result = train(cfg)
    results = [
        evaluate(
            EvalJobConfig.load(
                None,
                [
                    f"checkpoint={cfg.output_dir}",
                    f"shards={tiny_corpus[0]}",
                    "max_batches=1",
                    "tracking.new_run=true",
                    f"tracking.uri={uri}",
                ],
            )
        )
        for _ in range(2)
    ]
    client = MlflowClient(uri)
    eval_ids = [r["mlflow"]["run_id"] for r in results]
    checkpoint_run = client.get_run(result.mlflow_run_id)
    assert checkpoint_run.data.tags[EVAL_RUNS_TAG] == ",".join(eval_ids)
    for eval_id in eval_ids:
        run = client.get_run(eval_id)
        assert run.data.tags["checkpoint_run_id"] == result.mlflow_run_id
        assert run.data.tags["checkpoint"] == str(resolve_checkpoint(cfg.output_dir))
        (logged,) = run.inputs.dataset_inputs
        assert logged.dataset.name == tiny_corpus[0].name
        assert {tag.key: tag.value for tag in logged.tags} == {"mlflow.data.context": "eval"}


def _log_same_dataset(uri: str, experiment_id: str, barrier, attempts: int, results) -> None:
    from mlflow.entities import Dataset, DatasetInput
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(experiment_id).info.run_id
    dataset = Dataset(name="shards", digest="0123456789abcdef", source_type="local", source="{}")
    barrier.wait()  # every process at the lookup at once: the race a sweep's array elements run
    try:
        log_inputs_racing(client, run_id, [DatasetInput(dataset, tags=[])], attempts=attempts)
        results.put((run_id, "ok"))
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        results.put((run_id, repr(exc)[:300]))


def test_runs_logging_the_same_shards_at_once_all_get_the_input(tmp_path):
    """Four runs (a sweep's parallel elements) log one dataset into one fresh sqlite store at the same
    moment, three times over: without the retry about half of such rounds lose a run to the dataset
    table's uniqueness error (the job array test saw it kill a training)."""
    import multiprocessing

    from mlflow.tracking import MlflowClient

    context = multiprocessing.get_context("fork")
    for trial in range(3):
        uri = f"sqlite:///{tmp_path / f'mlflow{trial}.db'}"
        client = MlflowClient(tracking_uri=uri)
        experiment_id = client.create_experiment("sweep")
        barrier, results = context.Barrier(4), context.Queue()
        workers = [
            context.Process(target=_log_same_dataset, args=(uri, experiment_id, barrier, 3, results))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        outcomes = dict(results.get(timeout=120) for _ in workers)
        for worker in workers:
            worker.join()
        assert set(outcomes.values()) == {"ok"}, outcomes
        for run_id in outcomes:
            (logged,) = client.get_run(run_id).inputs.dataset_inputs
            assert logged.dataset.name == "shards"
