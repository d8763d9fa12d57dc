"""``lmpipe eval``: what a checkpoint scores on held-out data, in one process, logged to its MLflow run.

- **Language modelling** on one split of token shards (per manifest source), cut into the loader's
  windows (``seq_len + 1`` tokens, stride ``seq_len``). Loss and perplexity weigh every target token
  alike, so a source's share of the overall loss is its share of the tokens. **Bits per byte**
  ``= loss_sum / (ln 2 * bytes)`` compares across tokenizers: ``bytes`` are the UTF-8 bytes of text
  that the scored target tokens stand for, read off a byte-level BPE vocabulary (EOS and the other
  special tokens count 0 bytes while their loss stays in the sum); other tokenizers get no bpb (None).
- **Raw text** (a .txt file is one document, a .jsonl one document per line's ``text``): scored as
  lm-evaluation-harness scores perplexity tasks (``rolling``): every token of every document, each
  document conditioned on EOS alone at its start, with as much of the document as context as fits;
  bits per byte, word and byte perplexity over all the documents' bytes and words.
- **Held-out instruction loss**: the response-token loss on the val split of fine-tuning data, read,
  split and batched as ``finetune`` validates (``sft_data``), so the two numbers agree.
- **Multiple choice**: accuracy by log-likelihood (``mc_eval``).

Metrics go to MLflow at the checkpoint's step: to the run the checkpoint belongs to (its status is
left as it is: a finished run stays finished), or to a new run of the ``eval`` experiment, tagged with
the checkpoint and its run, whose ``eval_run_ids`` tag names the new run back. Evaluated shards are
logged as the run's dataset input (context ``eval``; ``lineage``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import Tokenizer

from data_prep.tokenizer.manifest import load_manifest
from data_prep.tokenizer.special import find_special_tokens
from pipeline.config.eval import EvalJobConfig
from pipeline.config.finetune import SFTDataConfig
from pipeline.config.train import DataConfig, TrackingConfig
from pipeline.core.errors import InputError, MissingInputError
from pipeline.core.files import CONFIG_FILE, TOKENIZER_FILE, atomic_write_json
from pipeline.eval.mc import evaluate_mc
from pipeline.eval.rolling import rolling_loglikelihood, text_metrics
from pipeline.finetune.data import ChatTokens, SFTDataset, read_examples, sft_eval_batches
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import Transformer
from pipeline.train.checkpoint import CHECKPOINTS_DIR, load_model_for_inference, read_meta, resolve_checkpoint
from pipeline.train.cuda import inference_device
from pipeline.train.data import ValidationSet, verify_shards
from pipeline.train.lineage import link_eval_run, log_shards_inputs
from pipeline.train.mixture import validation_sources
from pipeline.train.tracking import Tracker

TEXT_ONLY_METRICS = ("word_perplexity", "byte_perplexity")
"""Raw text has words and bytes to count; token shards do not."""
Batches = Iterable[tuple[str, torch.Tensor, torch.Tensor]]
"""(source, inputs, targets) triples."""


@torch.no_grad()
def evaluate(cfg: EvalJobConfig) -> dict[str, Any]:
    """Every evaluation ``cfg`` asks for: ``{"checkpoint", "step", "lm"?, "sft"?, "mc"?, "mlflow"?}``.

    Inputs are checked before the model loads; shards made with another tokenizer than the
    checkpoint's are refused, since the numbers would mean nothing.
    """
    step_dir = resolve_checkpoint(cfg.checkpoint)
    _require_inputs(cfg)
    model, _, tokenizer = load_model_for_inference(step_dir, device=inference_device())
    meta = read_meta(step_dir)
    results: dict[str, Any] = {"checkpoint": str(step_dir), "step": meta["step"]}
    eos_id = find_special_tokens(tokenizer, step_dir / TOKENIZER_FILE).eos_id
    if cfg.shards:
        results["lm"] = shards_lm(model, tokenizer, cfg, step_dir)
    elif cfg.text:
        results["lm"] = text_lm(model, tokenizer, cfg, eos_id=eos_id)
    if cfg.sft:
        results["sft"] = sft_loss(model, tokenizer, cfg, step_dir)
    if cfg.mc:
        results["mc"] = evaluate_mc(model, tokenizer, cfg.mc, eos_id=eos_id)
    if cfg.tracking.enabled:
        results["mlflow"] = log_to_mlflow(cfg, step_dir, meta, mlflow_metrics(results))
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.output, results)
    return results


def _require_inputs(cfg: EvalJobConfig) -> None:
    if cfg.shards:
        load_manifest(cfg.shards)
    for what, path in (("text", cfg.text), ("multiple-choice task", cfg.mc)):
        if path and not Path(path).is_file():
            raise MissingInputError(f"{what} not found: {path}")
    if cfg.sft and not Path(cfg.sft).exists():  # a file, or a datasets save_to_disk directory
        raise MissingInputError(f"SFT data not found: {cfg.sft}")


def shards_lm(model: Transformer, tokenizer: Tokenizer, cfg: EvalJobConfig, step_dir: Path) -> dict[str, Any]:
    """Loss, perplexity and bpb of ``cfg.split`` of ``cfg.shards``, overall and per manifest source."""
    verify_shards(
        cfg.shards,
        tokenizer_path=step_dir / TOKENIZER_FILE,
        vocab_size=model.args.vocab_size,
        check_sha=False,
    )
    sources = validation_sources(DataConfig(shards=cfg.shards, val_split=cfg.split))
    val_set = ValidationSet.from_sources(
        sources,
        split=cfg.split,
        seq_len=model.args.seq_len,
        windows_per_source=cfg.max_batches * cfg.batch_size or None,
    )
    return {
        "name": cfg.name or cfg.split,
        "shards": cfg.shards,
        "split": cfg.split,
        **_lm_summary(model, val_set.batches(batch_size=cfg.batch_size), tokenizer, per_source=True),
    }


def text_lm(model: Transformer, tokenizer: Tokenizer, cfg: EvalJobConfig, *, eos_id: int) -> dict[str, Any]:
    """The harness's rolling log-likelihood of every document of ``cfg.text`` (``rolling``): loss,
    perplexity, bits per byte, word and byte perplexity."""
    documents = read_documents(cfg.text)
    encodings = tokenizer.encode_batch_fast(documents, add_special_tokens=False)
    loglikelihood, tokens = rolling_loglikelihood(
        model,
        [encoding.ids for encoding in encodings],
        prefix=eos_id,
        stride=cfg.stride or None,
        batch_size=cfg.batch_size,
    )
    return {
        "name": cfg.name or Path(cfg.text).stem,
        "text": cfg.text,
        **text_metrics(loglikelihood, tokens, documents),
        "by_source": {},
    }


def read_documents(path: str | Path) -> list[str]:
    """The documents of a .txt file (the whole file) or a .jsonl file (each line's ``text``); empty
    ones are left out, as ``data tokenize`` leaves them out."""
    path = Path(path)
    if path.suffix == ".txt":
        docs = [path.read_text(encoding="utf-8")]
    else:
        docs = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
                    raise InputError(f"{path}:{number}: expected an object with a string field 'text'")
                docs.append(record["text"])
    docs = [doc for doc in docs if doc]
    if not docs:
        raise InputError(f"{path}: no text to evaluate on")
    return docs


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor | None:
    """The UTF-8 bytes of text each token id stands for (special tokens: 0), or None when the
    tokenizer is not byte-level BPE, whose vocabulary spells every byte as one character."""
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    if not any(part.get("type") == "ByteLevel" for part in parts):
        return None
    special = tokenizer.get_added_tokens_decoder()
    lengths = torch.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=torch.int64)
    for token, token_id in tokenizer.get_vocab(with_added_tokens=False).items():
        if token_id not in special:
            lengths[token_id] = len(token)
    return lengths


def _lm_summary(
    model: Transformer, batches: Batches, tokenizer: Tokenizer, *, per_source: bool
) -> dict[str, Any]:
    """Loss, perplexity and bits per byte over ``batches``, overall and (``per_source``) by source."""
    token_bytes = token_byte_lengths(tokenizer)
    sums: dict[str, list[float]] = {}  # source -> [loss_sum, tokens, bytes]
    batch_count = 0
    for source, inputs, targets in batches:
        scored = targets != IGNORE_INDEX
        entry = sums.setdefault(source, [0.0, 0, 0])
        entry[0] += summed_loss(model, inputs, targets)
        entry[1] += int(scored.sum())
        entry[2] += 0 if token_bytes is None else int(token_bytes[targets[scored]].sum())
        batch_count += 1
    total = [sum(column) for column in zip(*sums.values())]
    by_source = {name: _metrics(*entry, bytes_known=token_bytes is not None) for name, entry in sums.items()}
    return {
        **_metrics(*total, bytes_known=token_bytes is not None),
        "batches": batch_count,
        "by_source": by_source if per_source else {},
    }


def summed_loss(model: Transformer, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The summed loss of a batch built on the host, computed on the model's device (CUDA or the CPU)."""
    device = model.tok_embeddings.weight.device
    return float(model(inputs.to(device), targets.to(device), reduction="sum")[1])


def _metrics(loss_sum: float, tokens: float, text_bytes: float, *, bytes_known: bool) -> dict[str, Any]:
    loss = loss_sum / tokens
    bpb = loss_sum / (math.log(2) * text_bytes) if bytes_known and text_bytes else None
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "bpb": bpb,
        "tokens": tokens,
        "bytes": text_bytes if bytes_known else None,
    }


def sft_loss(model: Transformer, tokenizer: Tokenizer, cfg: EvalJobConfig, step_dir: Path) -> dict[str, Any]:
    """The response-token loss on the held-out examples of ``cfg.sft``, read, split and batched as
    fine-tuning validates; a fine-tune's checkpoint lends its own data settings (val_fraction, columns, roles,
    split, overlong), so the held-out examples are the ones it held out."""
    data = sft_data_config(cfg, step_dir)
    examples, _ = read_examples(
        data.path,
        tokenizer,
        seq_len=model.args.seq_len,
        val_fraction=data.val_fraction,
        columns=data.columns,
        roles=data.roles,
        split=data.split,
        overlong=data.overlong,
    )
    if not examples["val"]:
        raise InputError(
            f"{cfg.sft}: no held-out examples at val_fraction {data.val_fraction} (set sft_val_fraction=...)"
        )
    dataset = SFTDataset(
        examples["val"], seq_len=model.args.seq_len, pad=ChatTokens.of(tokenizer, cfg.sft).pad
    )
    loss_sum, tokens = 0.0, 0
    for inputs, targets in sft_eval_batches(dataset, batch_size=cfg.batch_size, max_batches=cfg.max_batches):
        loss_sum += summed_loss(model, inputs, targets)
        tokens += int((targets != IGNORE_INDEX).sum())
    loss = loss_sum / tokens
    return {
        "path": cfg.sft,
        "val_fraction": data.val_fraction,
        "examples": len(dataset),
        "tokens": tokens,
        "loss": loss,
        "ppl": math.exp(loss),
    }


def sft_data_config(cfg: EvalJobConfig, step_dir: Path) -> SFTDataConfig:
    """How to read ``cfg.sft``: as the fine-tune that wrote the checkpoint read its data, else by default."""
    section = job_config(step_dir).get("data") or {}
    data = (
        SFTDataConfig.from_dict({**section, "path": cfg.sft})
        if "path" in section
        else SFTDataConfig(path=cfg.sft)
    )
    if cfg.sft_val_fraction is not None:
        data.val_fraction = cfg.sft_val_fraction
    return data


def mlflow_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``eval/<name>/{loss,ppl,bpb}`` (+ ``/<source>``), ``eval/sft/{loss,ppl}``,
    ``eval/mc/<task>/{acc,acc_norm}``."""
    metrics: dict[str, Any] = {}
    if "lm" in results:
        lm = results["lm"]
        base = f"eval/{lm['name']}"
        metrics.update({f"{base}/{key}": lm.get(key) for key in ("loss", "ppl", "bpb", *TEXT_ONLY_METRICS)})
        for source, values in lm["by_source"].items():
            metrics.update({f"{base}/{key}/{source}": values[key] for key in ("loss", "ppl", "bpb")})
    if "sft" in results:
        metrics.update({f"eval/sft/{key}": results["sft"][key] for key in ("loss", "ppl")})
    if "mc" in results:
        mc = results["mc"]
        metrics.update({f"eval/mc/{mc['task']}/{key}": mc[key] for key in ("acc", "acc_norm")})
    return {key: float(value) for key, value in metrics.items() if value is not None}


def job_config(step_dir: Path) -> dict[str, Any]:
    """The config of the job that wrote the checkpoint, as a plain dict ({} for a bare weights file)."""
    path = step_dir / CONFIG_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def log_to_mlflow(
    cfg: EvalJobConfig, step_dir: Path, meta: dict[str, Any], metrics: dict[str, float]
) -> dict[str, Any]:
    """Log ``metrics`` at the checkpoint's step, to its run or to a new ``eval`` run; returns where they went.
    The store is the job's own, found as ``TrackingConfig.resolve_uri`` found it for the job."""
    job = job_config(step_dir)
    # The job wrote checkpoints/step_N into its output dir: taking that dir rather than the config's
    # output_dir (relative to the job's cwd, perhaps) finds the store from any cwd, and after a move.
    in_place = step_dir.parent.name == CHECKPOINTS_DIR
    output_dir = step_dir.parent.parent if in_place else Path(job.get("output_dir", "."))
    job_uri = (job.get("tracking") or {}).get("uri", "")
    uri = cfg.tracking.uri or TrackingConfig(uri=job_uri).resolve_uri(str(output_dir))
    step, checkpoint_run = meta["step"], meta.get("mlflow_run_id")
    if checkpoint_run and not cfg.tracking.new_run:
        tracker = Tracker(_client_of_run(uri, checkpoint_run, step_dir), checkpoint_run)
        tracker.log_metrics(metrics, step=step)
        log_shards_inputs(tracker, [cfg.shards] if cfg.shards else [], context="eval")
        tracker.flush()  # and no finish(): the run's status stays as it is
    else:
        tracker = Tracker.start(
            TrackingConfig(
                uri=uri,
                experiment=cfg.tracking.experiment,
                run_name=f"eval {output_dir.name}/{step_dir.name}",
            ),
            output_dir=output_dir,
            params=cfg.flat(),
            tags={
                "checkpoint": str(step_dir),
                "checkpoint_step": step,
                "checkpoint_run_id": checkpoint_run or "",
            },
        )
        tracker.log_metrics(metrics, step=step)
        log_shards_inputs(tracker, [cfg.shards] if cfg.shards else [], context="eval")
        tracker.finish()
        if checkpoint_run and tracker.run_id and _has_run(tracker.client, checkpoint_run):
            link_eval_run(tracker.client, checkpoint_run, tracker.run_id)
    return {
        "uri": uri,
        "run_id": tracker.run_id,
        "new_run": tracker.run_id != checkpoint_run,
        "step": step,
        "metrics": sorted(metrics),
    }


def _has_run(client: Any, run_id: str) -> bool:
    """Whether the store holds ``run_id`` (an eval logged elsewhere than its checkpoint's store)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _client_of_run(uri: str, run_id: str, step_dir: Path) -> Any:
    """A client of the store holding ``run_id``; a missing sqlite file is an error, not a new empty store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    way_out = "set tracking.uri=..., or log to a new run (--new-run), or not at all (tracking.enabled=false)"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise MissingInputError(f"MLflow store of {step_dir} not found: {uri}; {way_out}")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise InputError(f"MLflow run {run_id} of {step_dir} is not in {uri}; {way_out}") from None
    return client


def format_results(results: dict[str, Any]) -> str:
    """The human summary ``lmpipe eval`` prints."""
    lines = [f"checkpoint {results['checkpoint']} (step {results['step']})"]
    rows = []
    if "lm" in results:
        lm = results["lm"]
        rows.append((lm["name"], lm))
        rows += [(f"{lm['name']}/{source}", values) for source, values in lm["by_source"].items()]
    if "sft" in results:
        rows.append((f"sft ({results['sft']['examples']} held out)", {**results["sft"], "bpb": None}))
    if rows:
        width = max(len(name) for name, _ in rows)
        lines.append(f"{'':<{width}}  {'tokens':>12}  {'loss':>8}  {'ppl':>10}  {'bpb':>7}")
        for name, values in rows:
            bpb = "-" if values["bpb"] is None else f"{values['bpb']:.4f}"
            lines.append(
                f"{name:<{width}}  {values['tokens']:>12,}  {values['loss']:>8.4f}  "
                f"{values['ppl']:>10.2f}  {bpb:>7}"
            )
    if "mc" in results:
        mc = results["mc"]
        lines.append(
            f"mc {mc['task']}: acc {mc['acc']:.4f}  acc_norm {mc['acc_norm']:.4f}  "
            f"({mc['records']} records, {mc['skipped']} skipped)"
        )
    if "mlflow" in results:
        logged = results["mlflow"]
        run = "new run" if logged["new_run"] else "run"
        lines.append(
            f"mlflow: {len(logged['metrics'])} metrics to {run} {logged['run_id']} at step "
            f"{logged['step']} ({logged['uri']})"
        )
    return "\n".join(lines)
