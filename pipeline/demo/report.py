"""The demo's closing table: what each stage did, in one screen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text


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


def render_report(report: DemoReport, *, workdir: Path) -> tuple[Table, Text]:
    """The table, and a footer of paths and commands to print unwrapped (so they stay copy-pasteable)."""
    table = Table(title="lmpipe demo", show_header=True, header_style="bold", title_justify="left")
    table.add_column("stage")
    table.add_column("what happened")
    table.add_column("seconds", justify="right")
    _data_rows(table, report)
    _model_rows(table, report)
    _output_rows(table, report)
    table.add_row("total", "", f"{sum(report.seconds.values()):.1f}", style="bold")
    footer = Text.assemble(
        ("Outputs: ", "bold"),
        f"{workdir}\n",
        ("MLflow:  ", "bold"),
        f"mlflow ui --backend-store-uri sqlite:///{workdir}/mlflow.db",
    )
    return table, footer


def _data_rows(table: Table, report: DemoReport) -> None:
    """corpus, prep, tokenizer, tokenize."""
    seconds = report.seconds

    totals = report.prep["totals"]
    dropped = "\n".join(
        f"  {reason:<28} {count:>7,}"
        for reason, count in sorted(totals["dropped"].items(), key=lambda item: -item[1])
    )
    errors = sum(totals["errors"].values())
    table.add_row("corpus", "WARC of HTML pages + MediaWiki .xml.bz2 dump + sft.jsonl", _s(seconds, "corpus"))
    table.add_row(
        "prep",
        f"{totals['input']:,} records read, {totals['kept']:,} docs kept, {errors} errors\n"
        f"dropped:\n{dropped}",
        _s(seconds, "prep"),
    )

    manifest = report.manifest
    by_split = manifest["totals"]["by_split"]
    table.add_row(
        "tokenizer",
        f"byte-level BPE, vocab {manifest['tokenizer']['vocab_size']:,}",
        _s(seconds, "train-tokenizer"),
    )
    table.add_row(
        "tokenize",
        " / ".join(
            f"{split} {c['tokens']:,} tokens ({c['docs']:,} docs)"
            for split, c in sorted(by_split.items(), key=lambda item: item[0] != "train")
        ),
        _s(seconds, "tokenize"),
    )


def _model_rows(table: Table, report: DemoReport) -> None:
    """pretrain, finetune, eval."""
    seconds = report.seconds
    pre = report.pretrain
    beats = pre["final_val_ppl"] < report.unigram_ppl / 2
    verdict = "well below" if beats else "NOT well below"
    table.add_row(
        "pretrain",
        f"N={pre['n_params']:,} non-embedding params, {pre['steps']} steps, {pre['tokens_seen']:,} tokens, "
        f"{pre['world_size']} x {pre['strategy']} ranks, {pre['tokens_per_s']:,.0f} tokens/s\n"
        f"train loss {pre['first_train_loss']:.3f} -> {pre['last_train_loss']:.3f}; "
        f"val loss {pre['initial_val_loss']:.3f} -> {pre['final_val_loss']:.3f}\n"
        f"val perplexity {pre['final_val_ppl']:.1f}, {verdict} the unigram baseline {report.unigram_ppl:.1f}",
        _s(seconds, "pretrain"),
    )
    fin = report.finetune
    table.add_row(
        "finetune",
        f"SFT {fin['steps']} steps, response-token loss {fin['first_train_loss']:.3f} -> "
        f"{fin['last_train_loss']:.3f}" + _val(fin),
        _s(seconds, "finetune"),
    )
    evaluation = report.evaluation
    bpb = f", {evaluation['bpb']:.3f} bits per byte" if evaluation.get("bpb") is not None else ""
    table.add_row(
        "eval",
        f"pretrained model on {evaluation['split']}: loss {evaluation['loss']:.3f}, "
        f"perplexity {evaluation['ppl']:.1f}{bpb} over {evaluation['tokens']:,} tokens",
        _s(seconds, "eval"),
    )


def _output_rows(table: Table, report: DemoReport) -> None:
    """generate, export."""
    seconds = report.seconds
    sample = " ".join(report.sample.split())
    chat = report.chat
    table.add_row(
        "generate",
        Text.assemble(
            ("pretrained: ", "bold"),
            sample,
            "\n",
            ("fine-tuned: ", "bold"),
            f"Q: {chat['prompt']}  A: {chat['answer']}\n",
            ("reference:  ", "bold"),
            chat["reference"],
        ),
        _s(seconds, "generate"),
    )
    export = report.export
    gap = export.get("max_logit_diff")
    proof = (
        "transformers not installed: load check skipped"
        if gap is None
        else f"transformers LlamaForCausalLM loads it: max |logit difference| to lmpipe {gap:.1e}"
    )
    table.add_row(
        "export", f"fine-tuned model in Hugging Face format, {export['dir']}\n{proof}", _s(seconds, "export")
    )


def _val(result: dict[str, Any]) -> str:
    if result.get("final_val_loss") is None:
        return ""
    return f"; val loss {result['initial_val_loss']:.3f} -> {result['final_val_loss']:.3f}"


def _s(seconds: dict[str, float], name: str) -> str:
    return f"{seconds[name]:.1f}" if name in seconds else ""
