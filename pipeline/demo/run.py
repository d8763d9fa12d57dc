"""``lmpipe demo``: the whole loop on a corpus it generates, then one table of what happened.

Every stage runs through the same functions as its CLI verb; training and fine-tuning
run under real ``torchrun`` (DDP over gloo on CPU), so the demo exercises the path a
user takes, only smaller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config.finetune import FinetuneJobConfig, SFTDataConfig
from pipeline.config.model import ModelConfig
from pipeline.config.train import DataConfig, LoopConfig, TrackingConfig, TrainJobConfig
from pipeline.core.config import Config, require


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


@dataclass
class DemoReport:
    """What the closing table shows; filled stage by stage."""

    seconds: dict[str, float] = field(default_factory=dict)
    prep: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    unigram_ppl: float = 0.0
    pretrain: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    sample: str = ""
    chat: dict[str, str] = field(default_factory=dict)
    """One instruction: its prompt, the fine-tuned model's answer and the reference answer."""
    export: dict[str, Any] = field(default_factory=dict)
    """Where the fine-tuned model went in Hugging Face format, and its logits' largest gap to ours there."""


def run_demo(cfg: DemoConfig) -> int:
    from pipeline.core.progress import console

    work = Path(cfg.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg.save(work / "demo.yaml")
    report = DemoReport()
    stage = _stage_timer(report, console)
    tracking_uri = f"sqlite:///{work}/mlflow.db"

    with stage("corpus"):
        from pipeline.demo.corpus import generate_corpus

        corpus = generate_corpus(work / "corpus", seed=cfg.seed)

    with stage("prep"):
        from data_prep.config import PrepConfig
        from data_prep.prep import run_prep
        from pipeline.core.progress import counting_progress

        prep_cfg = PrepConfig(input=[str(corpus.warc), str(corpus.wiki)], output=str(work / "data"))
        prep_cfg.validate()
        with counting_progress("prep: documents read") as advance:
            report.prep = run_prep(prep_cfg, progress=advance)

    with stage("train-tokenizer"):
        from data_prep.tokenizer.config import TokenizerTrainConfig
        from data_prep.tokenizer.train import train_tokenizer

        tok_cfg = TokenizerTrainConfig(
            input=str(work / "data"), output=str(work / "tokenizer"), vocab_size=cfg.vocab_size
        )
        tok_cfg.validate()
        train_tokenizer(tok_cfg)

    with stage("tokenize"):
        from data_prep.tokenizer.config import TokenizeConfig
        from data_prep.tokenizer.tokenize import tokenize
        from pipeline.train.data import unigram_perplexity

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

    tracking = TrackingConfig(uri=tracking_uri, experiment="lmpipe-demo")
    with stage("pretrain"):
        train_cfg = TrainJobConfig(
            output_dir=str(work / "pretrain"),
            model=cfg.model,
            data=DataConfig(shards=str(shards)),
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

    with stage("eval"):
        from pipeline.config.eval import EvalJobConfig
        from pipeline.eval.evaluate import evaluate

        report.evaluation = evaluate(EvalJobConfig(checkpoint=str(work / "pretrain"), shards=str(shards)))[
            "lm"
        ]

    with stage("generate"):
        from pipeline.config.eval import GenerateJobConfig
        from pipeline.eval.generate import generate

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

    with stage("export"):
        report.export = _export_and_check(work / "finetune", work / "hf")

    (work / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    from pipeline.demo.report import render_report

    table, footer = render_report(report, workdir=work)
    console.print(table)
    console.print(footer, soft_wrap=True)
    return 0


def _run_ranks(verb: str, job_cfg: Config, config_path: Path, nproc_per_node: int) -> dict[str, Any]:
    """Save the resolved config, run the verb under torchrun, return the result.json rank 0 wrote."""
    from launch.torchrun import run_torchrun
    from pipeline.core.progress import console

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
    import shutil

    import torch

    from pipeline.hf.interop import export_hf
    from pipeline.train.checkpoint import load_model_for_inference

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
