"""``lmpipe eval`` and ``lmpipe generate``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.cli.common import load_config, verb
from pipeline.config.eval import EvalJobConfig, GenerateJobConfig


def add_parsers(verbs: Any) -> None:
    evaluate = verb(
        verbs,
        "eval",
        "loss, perplexity and bits per byte of a checkpoint on token shards or raw "
        "text, held-out SFT loss, multiple-choice accuracy; logged to MLflow",
        _run_eval,
    )
    evaluate.add_argument("--checkpoint", help="checkpoint (step dir or training output dir)")
    evaluate.add_argument("--shards", help="token shards directory, scored per source")
    evaluate.add_argument("--split", help="split of the shards to evaluate (default val)")
    evaluate.add_argument(
        "--text",
        help="raw text instead of shards: a .txt file (one document) or a .jsonl "
        "file with a 'text' field per line",
    )
    evaluate.add_argument(
        "--sft",
        help="fine-tuning data (as finetune's data.path): loss on the responses of its held-out examples",
    )
    evaluate.add_argument("--mc", help='multiple-choice JSONL of {"context", "choices", "answer"} records')
    evaluate.add_argument("--output", help="also write every result to this JSON file")
    evaluate.add_argument(
        "--new-run",
        action="store_const",
        const=True,
        help="log to a new MLflow run of the 'eval' experiment, not the checkpoint's run",
    )
    evaluate.set_defaults(config_of=eval_config)

    generate = verb(verbs, "generate", "sample completions of prompts from a checkpoint", _run_generate)
    generate.add_argument("--checkpoint", help="checkpoint (step dir or training output dir)")
    generate.add_argument("--prompt", help="text to continue")
    generate.add_argument(
        "--prompts",
        help="file of prompts: .txt (one per line) or .jsonl (a 'prompt' field; "
        "with --chat, or 'messages': a conversation ending in a user turn)",
    )
    generate.add_argument(
        "--chat",
        action="store_const",
        const=True,
        help="treat each prompt as a user turn (fine-tuned models); complete with the reply only",
    )
    generate.add_argument("--system", help="with --chat: a system message before each prompt")
    generate.add_argument("--max-new-tokens", type=int, help="tokens to sample per prompt (default 64)")
    generate.add_argument("--temperature", type=float, help="0: greedy (default 0.8)")
    generate.add_argument(
        "--top-k", type=int, help="sample among the k most probable tokens, 0: all (default 50)"
    )
    generate.add_argument(
        "--top-p", type=float, help="nucleus: the most probable tokens of this mass (default 1)"
    )
    generate.add_argument(
        "--stop",
        nargs="+",
        action="extend",
        metavar="S",
        help="end a completion just before any of these strings",
    )
    generate.add_argument("--seed", type=int, help="sampling seed (default 0)")
    generate.add_argument(
        "--output", help='write {"prompt" or "messages", "completion"} JSONL here instead of printing'
    )


def eval_config(args: argparse.Namespace) -> EvalJobConfig:
    return load_config(EvalJobConfig, args, **_eval_flags(args))


def _run_eval(args: argparse.Namespace) -> int:
    cfg = eval_config(args)
    from pipeline.eval.evaluate import evaluate, format_results

    print(format_results(evaluate(cfg)))
    return 0


def _eval_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "checkpoint": args.checkpoint,
        "shards": args.shards,
        "split": args.split,
        "text": args.text,
        "sft": args.sft,
        "mc": args.mc,
        "output": args.output,
        "tracking.new_run": args.new_run,
    }


def _run_generate(args: argparse.Namespace) -> int:
    cfg = load_config(
        GenerateJobConfig,
        args,
        checkpoint=args.checkpoint,
        prompt=args.prompt,
        prompts=args.prompts,
        chat=args.chat,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop=args.stop,
        seed=args.seed,
        output=args.output,
    )
    from pipeline.eval.generate import complete

    records = complete(cfg)
    if cfg.output:
        print(f"generate: {len(records)} completions -> {cfg.output}")
    elif cfg.prompt is not None:  # one prompt: the text itself, continued (a chat reply alone)
        print(records[0]["completion"] if cfg.chat else records[0]["prompt"] + records[0]["completion"])
    else:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
    return 0
