"""``lmpipe demo``: the whole loop on a corpus it generates, then one table of what happened.

Every stage runs through the same functions as its CLI verb; training and fine-tuning
run under real ``torchrun`` (DDP over gloo on CPU), so the demo exercises the path a
user takes, only smaller.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.tokenize import tokenize
from data_prep.tokenizer.train import train_tokenizer
from launch.torchrun import run_torchrun
from pipeline.config.eval import EvalJobConfig, GenerateJobConfig
from pipeline.config.finetune import FinetuneJobConfig, SFTDataConfig
from pipeline.config.model import ModelConfig
from pipeline.config.train import DataConfig, LoopConfig, TrackingConfig, TrainJobConfig
from pipeline.core.config import Config, require
from pipeline.core.progress import console, counting_progress
from pipeline.demo.corpus import CorpusFiles, generate_corpus
from pipeline.demo.report import DemoReport, render_report
from pipeline.eval.evaluate import evaluate
from pipeline.eval.generate import generate
from pipeline.hf.export import export_hf
from pipeline.train.checkpoint import load_model_for_inference
from pipeline.train.data import unigram_perplexity

__all__ = ["DemoConfig", "run_demo"]


def _demo_pretrain() -> LoopConfig:
    return LoopConfig(
        max_steps=250,
        global_batch_size=32,
        micro_batch_size=8,
        lr=3e-3,
        warmup_steps=15,
        log_interval=10,
        eval_interval=50,
    )


def _demo_finetune() -> LoopConfig:
    return LoopConfig(
        max_steps=60,
        global_batch_size=32,
        micro_batch_size=8,
        lr=1e-3,
        warmup_steps=6,
        log_interval=5,
        eval_interval=0,
        eval_batches=10,
    )


@dataclass
class DemoConfig(Config):
    """Everything the demo varies; the stages' own configs are built from it."""

    workdir: str = "demo_out"
    seed: int = 0
    nproc_per_node: int = 2
    """Ranks for pretraining and fine-tuning (DDP under torchrun)."""
    vocab_size: int = 4096
    model: ModelConfig = field(default_factory=lambda: ModelConfig(size="tiny", seq_len=256))
    pretrain: LoopConfig = field(default_factory=_demo_pretrain)
    finetune: LoopConfig = field(default_factory=_demo_finetune)
    prompt: str = "The town of"
    """Prompt for the generated sample shown at the end."""

    def check(self, prefix: str) -> None:
        require(self.nproc_per_node >= 1, f"{prefix}nproc_per_node", "must be >= 1")
        require(self.vocab_size > 512, f"{prefix}vocab_size", "must be > 512")


def run_demo(cfg: DemoConfig) -> int:
    work = Path(cfg.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg.save(work / "demo.yaml")
    report = DemoReport()
    stage = _stage_timer(report, console)
    with stage("corpus"):
        corpus = generate_corpus(work / "corpus", seed=cfg.seed)
    _data_stages(cfg, work, corpus, report, stage)
    _training_stages(cfg, work, corpus, report, stage)
    with stage("eval"):
        report.evaluation = evaluate(
            EvalJobConfig(checkpoint=str(work / "pretrain"), shards=str(work / "shards"))
        )["lm"]
    with stage("generate"):
        _generate(cfg, work, corpus, report)
    with stage("export"):
        report.export = _export_and_check(work / "finetune", work / "hf")

    (work / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    table, footer = render_report(report, workdir=work)
    console.print(table)
    console.print(footer, soft_wrap=True)
    return 0


def _data_stages(
    cfg: DemoConfig, work: Path, corpus: CorpusFiles, report: DemoReport, stage: Callable[[str], Any]
) -> None:
    """prep -> train-tokenizer -> tokenize, through the functions the ``lmpipe data`` verbs call."""
    with stage("prep"):
        prep_cfg = PrepConfig(input=[str(corpus.warc), str(corpus.wiki)], output=str(work / "data"))
        prep_cfg.validate()
        with counting_progress("prep: documents read") as advance:
            report.prep = run_prep(prep_cfg, progress=advance)

    with stage("train-tokenizer"):
        tok_cfg = TokenizerTrainConfig(
            input=str(work / "data"), output=str(work / "tokenizer"), vocab_size=cfg.vocab_size
        )
        tok_cfg.validate()
        train_tokenizer(tok_cfg)

    with stage("tokenize"):
        shards = work / "shards"
        tokenize_cfg = TokenizeConfig(
            input=[str(work / "data")],
            tokenizer=str(work / "tokenizer"),
            output=str(shards),
            val_fraction=0.05,
        )
        tokenize_cfg.validate()
        with counting_progress("tokenize: documents") as advance:
            report.manifest = tokenize(tokenize_cfg, progress=advance)
        report.unigram_ppl = unigram_perplexity(shards)


def _training_stages(
    cfg: DemoConfig, work: Path, corpus: CorpusFiles, report: DemoReport, stage: Callable[[str], Any]
) -> None:
    """pretrain -> finetune, each under torchrun."""
    tracking = TrackingConfig(uri=f"sqlite:///{work}/mlflow.db", experiment="lmpipe-demo")
    with stage("pretrain"):
        train_cfg = TrainJobConfig(
            output_dir=str(work / "pretrain"),
            model=cfg.model,
            data=DataConfig(shards=str(work / "shards")),
            train=cfg.pretrain,
            tracking=replace(tracking, run_name="demo-pretrain"),
        )
        report.pretrain = _run_ranks(
            "train", train_cfg, work / "configs" / "pretrain.yaml", cfg.nproc_per_node
        )

    with stage("finetune"):
        finetune_cfg = FinetuneJobConfig(
            init_from=str(work / "pretrain"),
            output_dir=str(work / "finetune"),
            data=SFTDataConfig(path=str(corpus.sft)),
            train=cfg.finetune,
            tracking=replace(tracking, run_name="demo-finetune"),
        )
        report.finetune = _run_ranks(
            "finetune", finetune_cfg, work / "configs" / "finetune.yaml", cfg.nproc_per_node
        )


def _generate(cfg: DemoConfig, work: Path, corpus: CorpusFiles, report: DemoReport) -> None:
    """A sample from the pretrained model, and the fine-tuned model's answer to the first instruction."""
    report.sample = generate(
        GenerateJobConfig(
            checkpoint=str(work / "pretrain"),
            prompt=cfg.prompt,
            max_new_tokens=48,
            temperature=0.7,
            seed=cfg.seed,
        )
    )
    with open(corpus.sft) as records:
        instruction = json.loads(records.readline())
    answer = generate(
        GenerateJobConfig(
            checkpoint=str(work / "finetune"),
            prompt=instruction["prompt"],
            chat=True,
            max_new_tokens=32,
            temperature=0.0,
        )
    )
    report.chat = {
        "prompt": instruction["prompt"],
        "answer": answer,
        "reference": instruction["response"],
    }


def _run_ranks(verb: str, job_cfg: Config, config_path: Path, nproc_per_node: int) -> dict[str, Any]:
    """Save the resolved config, run the verb under torchrun, return the result.json rank 0 wrote."""
    job_cfg.validate()
    job_cfg.save(config_path)
    code = run_torchrun(
        [verb, "--config", str(config_path)],
        nproc_per_node=nproc_per_node,
        on_line=lambda line: console.print(
            line.rstrip(), style="dim", soft_wrap=True, markup=False, highlight=False
        ),
    )
    if code != 0:
        raise RuntimeError(f"{verb} failed under torchrun (exit {code}); its output is above")
    return json.loads((Path(job_cfg.output_dir) / "result.json").read_text())  # type: ignore[attr-defined]


def _stage_timer(report: DemoReport, console: Any) -> Callable[[str], Any]:
    @contextmanager
    def stage(name: str) -> Iterator[None]:
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        yield
        report.seconds[name] = time.perf_counter() - start
        console.print(f"[green]✓[/green] {name} in {report.seconds[name]:.1f}s")

    return stage


def _export_and_check(checkpoint: Path, output: Path) -> dict[str, Any]:
    """Export ``checkpoint`` as a Hugging Face Llama directory, load it with ``transformers`` and compare
    its logits with ours on one sequence: the proof that the export works, not just that it was written."""
    shutil.rmtree(output, ignore_errors=True)  # the demo owns its workdir; a rerun exports afresh
    export_hf(checkpoint, output)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:  # a dev dependency: `make demo` installs it, a bare `pip install lmpipe` does not
        return {"dir": str(output), "max_logit_diff": None}
    ours, args, _ = load_model_for_inference(checkpoint)
    theirs = AutoModelForCausalLM.from_pretrained(output).eval()
    tokens = torch.randint(
        0, args.vocab_size, (1, min(64, args.seq_len)), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        gap = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    return {"dir": str(output), "max_logit_diff": gap}
