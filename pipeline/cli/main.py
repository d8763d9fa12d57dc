"""``lmpipe``: one console script, thin on purpose.

Each verb parses its flags, loads and validates its whole config (``--config`` file,
then the flags, then dotted ``key.sub=value`` overrides) and only then imports the
heavy module that does the work. User errors end as one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.cli.hf import add_export_import_parsers
from pipeline.cli.sweep import add_sweep_parser
from pipeline.core.config import Config, ConfigError

USER_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except USER_ERRORS as exc:
        if os.environ.get("LMPIPE_DEBUG"):
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun, say it once
            print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmpipe: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmpipe",
        description="Raw web and encyclopedia text to trained, compared language models.",
        epilog="Every verb takes --config FILE.yaml and dotted overrides such as train.lr=3e-4.",
    )
    verbs = parser.add_subparsers(title="verbs", metavar="VERB")

    demo = _verb(verbs, "demo", "run the whole loop on a corpus it generates", _run_demo)
    demo.add_argument("--workdir", help="where every output of the demo lands (default: demo_out)")

    data = verbs.add_parser("data", help="data preparation: prep, train-tokenizer, tokenize, stats")
    data_verbs = data.add_subparsers(title="data verbs", metavar="VERB")
    prep = _verb(data_verbs, "prep", "WARC / Wikipedia dumps -> cleaned, filtered, deduplicated docs/*.parquet",
                 _run_prep)
    prep.add_argument("--input", nargs="+",
                      help="files, globs, directories, http(s)/s3 URLs or *.paths[.gz] listings "
                           "(.warc[.gz], .warc.wet.gz, .xml[.bz2], .jsonl[.gz|.zst], .parquet, a saved HF dataset)")
    prep.add_argument("--output", help="output directory")
    prep.add_argument("--format", help="auto (by file name), warc, wet, wat, wiki, jsonl, parquet or hf")
    prep.add_argument("--workers", type=int, help="processes, one input file each at a time")
    prep.add_argument("--executor", help="local (default) or slurm: one Slurm job array element per input "
                                         "file (slurm.partition=..., slurm.max_parallel=N, ...)")

    tok = _verb(data_verbs, "train-tokenizer", "train a byte-level BPE tokenizer on docs/*.parquet",
                _run_train_tokenizer)
    tok.add_argument("--input", help="docs directory written by `data prep`")
    tok.add_argument("--vocab-size", type=int, help="vocabulary size (default 8192)")
    tok.add_argument("--output", help="directory for tokenizer.json (+ tokenizer_config.json for transformers)")

    tokenize = _verb(data_verbs, "tokenize", "docs/*.parquet -> Arrow token shards + manifest.json", _run_tokenize)
    tokenize.add_argument("--input", nargs="+", help="docs directories written by `data prep`")
    tokenize.add_argument("--tokenizer", help="directory holding tokenizer.json, or any tokenizer.json "
                                              "(GPT-2, Llama, ...: its EOS is found, or set eos_token=...)")
    tokenize.add_argument("--output", help="shards directory")
    tokenize.add_argument("--workers", type=int, help="processes, one docs file each at a time")
    tokenize.add_argument("--shard-size-mb", type=float, help="close a shard at this many MiB (default 256)")
    tokenize.add_argument("--executor", help="local (default) or slurm: one Slurm job array element per docs "
                                             "file (slurm.partition=..., slurm.max_parallel=N, ...)")

    stats = data_verbs.add_parser("stats", help="summarise a prep output (stats.json) or shards dir (manifest.json)")
    stats.add_argument("dir", help="a `data prep` output or a `data tokenize` output")
    stats.set_defaults(run=_run_stats)

    train = _verb(verbs, "train", "pretrain a ladder model on token shards (under torchrun for several ranks)",
                  _run_train)
    train.add_argument("--init-from", help="continued pretraining: start from this checkpoint's weights (step dir "
                                           "or training output dir) with a fresh optimizer, schedule and loader")
    train.add_argument("--resume", help="auto (default: the newest checkpoint in output_dir, if any), never, "
                                        "or a step_N directory; SIGTERM/SIGUSR2 checkpoint and exit 75 to requeue")

    finetune = _verb(verbs, "finetune", "supervised fine-tuning from a pretrained checkpoint", _run_finetune)
    finetune.add_argument("--init-from", help="pretrained checkpoint (step dir or training output dir)")

    evaluate = _verb(verbs, "eval", "loss, perplexity and bits per byte of a checkpoint on token shards or raw "
                                     "text, held-out SFT loss, multiple-choice accuracy; logged to MLflow", _run_eval)
    evaluate.add_argument("--checkpoint", help="checkpoint (step dir or training output dir)")
    evaluate.add_argument("--shards", help="token shards directory, scored per source")
    evaluate.add_argument("--split", help="split of the shards to evaluate (default val)")
    evaluate.add_argument("--text", help="raw text instead of shards: a .txt file (one document) or a .jsonl "
                                         "file with a 'text' field per line")
    evaluate.add_argument("--sft", help="fine-tuning data (as finetune's data.path): loss on the responses of "
                                        "its held-out examples")
    evaluate.add_argument("--mc", help='multiple-choice JSONL of {"context", "choices", "answer"} records')
    evaluate.add_argument("--output", help="also write every result to this JSON file")
    evaluate.add_argument("--new-run", action="store_const", const=True,
                          help="log to a new MLflow run of the 'eval' experiment, not the checkpoint's run")

    generate = _verb(verbs, "generate", "sample completions of prompts from a checkpoint", _run_generate)
    generate.add_argument("--checkpoint", help="checkpoint (step dir or training output dir)")
    generate.add_argument("--prompt", help="text to continue")
    generate.add_argument("--prompts", help="file of prompts: .txt (one per line) or .jsonl (a 'prompt' field; "
                                            "with --chat, or 'messages': a conversation ending in a user turn)")
    generate.add_argument("--chat", action="store_const", const=True,
                          help="treat each prompt as a user turn (fine-tuned models); complete with the reply only")
    generate.add_argument("--system", help="with --chat: a system message before each prompt")
    generate.add_argument("--max-new-tokens", type=int, help="tokens to sample per prompt (default 64)")
    generate.add_argument("--temperature", type=float, help="0: greedy (default 0.8)")
    generate.add_argument("--top-k", type=int, help="sample among the k most probable tokens, 0: all (default 50)")
    generate.add_argument("--top-p", type=float, help="nucleus: the most probable tokens of this mass (default 1)")
    generate.add_argument("--stop", nargs="+", action="extend", metavar="S",
                          help="end a completion just before any of these strings")
    generate.add_argument("--seed", type=int, help="sampling seed (default 0)")
    generate.add_argument("--output", help='write {"prompt" or "messages", "completion"} JSONL here instead of '
                                           'printing')

    checkpoint = verbs.add_parser("checkpoint", help="checkpoint tools: consolidate")
    checkpoint_verbs = checkpoint.add_subparsers(title="checkpoint verbs", metavar="VERB")
    consolidate = checkpoint_verbs.add_parser(
        "consolidate", help="any strategy's checkpoint -> one plain safetensors state dict (+ .json with the shape)")
    consolidate.add_argument("checkpoint", help="checkpoint (step dir or training output dir)")
    consolidate.add_argument("--output", required=True, help="the .safetensors file to write")
    consolidate.set_defaults(run=_run_consolidate)

    add_export_import_parsers(verbs)
    add_sweep_parser(verbs)
    _add_launchers(verbs)
    return parser


def _verb(subparsers: Any, name: str, help_text: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    verb = subparsers.add_parser(name, help=help_text, description=help_text)
    verb.add_argument("--config", help="YAML config file (defaults are built in)")
    verb.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    verb.set_defaults(run=run)
    return verb


def _load(cls: type[Config], args: argparse.Namespace, **flag_values: Any) -> Any:
    return cls.load(args.config, args.overrides, values=flag_values)


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.demo.run import DemoConfig, run_demo

    return run_demo(_load(DemoConfig, args, workdir=args.workdir))


def _run_prep(args: argparse.Namespace) -> int:
    from data_prep.config import PrepConfig

    cfg = _load(PrepConfig, args, input=args.input, output=args.output, format=args.format, workers=args.workers,
                executor=args.executor)
    from data_prep.executor import TaskFailed
    from data_prep.prep import run_prep
    from pipeline.core.progress import counting_progress

    try:
        with counting_progress("prep: documents read") as advance:
            stats = run_prep(cfg, progress=advance)
    except TaskFailed as exc:
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(Path(cfg.output))
    _warn_errors(stats)
    return 0 if stats else 1


def _warn_errors(stats: dict[str, Any]) -> None:
    """One line on stderr when records could not be read: the run still succeeded (exit 0)."""
    errors = {kind: n for kind, n in stats.get("totals", {}).get("errors", {}).items() if n}
    if errors:
        total = sum(errors.values())
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items(), key=lambda item: -item[1]))
        print(f"lmpipe: warning: {total} record{'s' if total != 1 else ''} could not be read ({kinds}); "
              "see stats.json", file=sys.stderr)


def _run_train_tokenizer(args: argparse.Namespace) -> int:
    from data_prep.tokenizer.config import TokenizerTrainConfig

    cfg = _load(TokenizerTrainConfig, args, input=args.input, output=args.output, vocab_size=args.vocab_size)
    from data_prep.tokenizer.train import train_tokenizer

    print(f"wrote {train_tokenizer(cfg)}")
    return 0


def _run_tokenize(args: argparse.Namespace) -> int:
    from data_prep.tokenizer.config import TokenizeConfig

    shard_size_bytes = None if args.shard_size_mb is None else int(args.shard_size_mb * 2**20)
    cfg = _load(TokenizeConfig, args, input=args.input, tokenizer=args.tokenizer, output=args.output,
                workers=args.workers, shard_size_bytes=shard_size_bytes, executor=args.executor)
    from data_prep.executor import TaskFailed
    from data_prep.tokenizer.tokenize import tokenize
    from pipeline.core.progress import counting_progress

    try:
        with counting_progress("tokenize: documents") as advance:
            tokenize(cfg, progress=advance)
    except TaskFailed as exc:
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(Path(cfg.output))
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    _print_summary(Path(args.dir))
    return 0


def _print_summary(directory: Path) -> None:
    from data_prep.summary import summarize_dir

    print(summarize_dir(directory))


def _run_train(args: argparse.Namespace) -> int:
    from pipeline.config.train import TrainJobConfig

    cfg = _load(TrainJobConfig, args, init_from=args.init_from, **{"checkpoint.resume": args.resume})
    from pipeline.train.preemption import EXIT_PREEMPTED, Preempted
    from pipeline.train.pretrain import train

    try:
        train(cfg)
    except Preempted as exc:
        print(f"lmpipe: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    from pipeline.config.finetune import FinetuneJobConfig

    cfg = _load(FinetuneJobConfig, args, init_from=args.init_from)
    from pipeline.finetune.run import finetune

    finetune(cfg)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from pipeline.config.eval import EvalJobConfig

    cfg = _load(EvalJobConfig, args, **_eval_flags(args))
    from pipeline.eval.evaluate import evaluate, format_results

    print(format_results(evaluate(cfg)))
    return 0


def _eval_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"checkpoint": args.checkpoint, "shards": args.shards, "split": args.split, "text": args.text,
            "sft": args.sft, "mc": args.mc, "output": args.output, "tracking.new_run": args.new_run}


def _run_generate(args: argparse.Namespace) -> int:
    import json

    from pipeline.config.eval import GenerateJobConfig

    cfg = _load(GenerateJobConfig, args, checkpoint=args.checkpoint, prompt=args.prompt, prompts=args.prompts,
                chat=args.chat, system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, stop=args.stop, seed=args.seed, output=args.output)
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


def _run_consolidate(args: argparse.Namespace) -> int:
    from pipeline.train.checkpoint import consolidate

    print(f"wrote {consolidate(args.checkpoint, args.output)}")
    return 0


def _add_launchers(verbs: Any) -> None:
    launch = verbs.add_parser("launch", help="run a verb under a launcher: torchrun, deepspeed or a Slurm job")
    launchers = launch.add_subparsers(title="launchers", metavar="LAUNCHER")

    torchrun = _launcher(launchers, "torchrun", "torchrun on this node, or on each of N nodes: lmpipe launch "
                         "torchrun --nproc-per-node 8 [--nnodes 2 --rdzv-endpoint node01:29500] -- train ...",
                         _run_launch_torchrun)
    torchrun.add_argument("--nproc-per-node", "--gpus-per-node", type=int, default=1,
                          help="processes (ranks) on this node, one per GPU")
    torchrun.add_argument("--nnodes", "--nodes", type=int, default=1,
                          help="nodes taking part (run the same command on each)")
    torchrun.add_argument("--rdzv-endpoint", default="",
                          help="HOST:PORT every node can reach (one of the nodes); needed for more than one node")
    torchrun.add_argument("--rdzv-id", default="lmpipe", help="a job id shared by the nodes of one run")
    torchrun.add_argument("--node-rank", type=int,
                          help="this node's rank: static rendezvous at the endpoint instead of c10d")

    deepspeed = _launcher(launchers, "deepspeed", "the DeepSpeed launcher, on this node or over a hostfile's hosts",
                          _run_launch_deepspeed)
    deepspeed.add_argument("--hostfile", default="", help="lines 'host slots=G'; none: this node only")
    deepspeed.add_argument("--num-nodes", "--nodes", type=int, default=0, help="the first N hosts of the hostfile")
    deepspeed.add_argument("--num-gpus", "--gpus-per-node", type=int, default=0,
                           help="ranks per node (on CPU: how many processes; the runner sees one device)")
    deepspeed.add_argument("--include", default="", help="hosts/slots to use, e.g. node1@node2:0,2")
    deepspeed.add_argument("--exclude", default="", help="hosts/slots to leave out")
    deepspeed.add_argument("--master-addr", default="",
                           help="address of the first node (default: 127.0.0.1 on one node)")
    deepspeed.add_argument("--master-port", type=int, default=29500, help="its port for the process group")

    slurm = _launcher(launchers, "slurm", "render an sbatch script from a cluster profile and submit it "
                      "(--dry-run prints it)", _run_launch_slurm)
    slurm.add_argument("--profile", required=True, help="cluster profile YAML, e.g. configs/slurm/gpu-8x.yaml")
    slurm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a profile key, e.g. --set partition=gpu --set time=12:00:00 (repeatable)")
    slurm.add_argument("--nodes", type=int, help="nodes (overrides the profile)")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per node (overrides the profile)")
    slurm.add_argument("--job-name", help="Slurm job name (default: lmpipe-<verb>)")
    slurm.add_argument("--launcher", choices=["torchrun", "deepspeed"], default="torchrun",
                       help="what each node runs: torchrun (default) or DeepSpeed's launcher "
                            "(hostfile from the allocation)")
    slurm.add_argument("--array-configs", nargs="+", default=[], metavar="CONFIG",
                       help="a job array: element i runs the verb with --config CONFIG_i")
    slurm.add_argument("--max-parallel", type=int, default=0, help="array elements running at once (0: no cap)")

    status = launchers.add_parser("status", help="a submitted Slurm job's state, one line per array element",
                                  description="a submitted Slurm job's state, one line per array element "
                                              "(scontrol, then sacct for jobs that ended long ago)")
    status.add_argument("job_id", help="the id `lmpipe launch slurm` printed")
    status.set_defaults(run=_run_launch_status)


def _launcher(launchers: Any, name: str, help_text: str,
              run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    launcher = launchers.add_parser(name, help=help_text, description=help_text)
    launcher.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    launcher.add_argument("verb_args", nargs=argparse.REMAINDER, help="-- then the verb and its arguments")
    launcher.set_defaults(run=run)
    return launcher


def _verb_args(args: argparse.Namespace, launcher: str) -> list[str]:
    """The verb and its arguments, after ``--``."""
    verb_args = args.verb_args[1:] if args.verb_args[:1] == ["--"] else args.verb_args
    if not verb_args:
        raise ValueError(f"give the verb to run after --, e.g. lmpipe launch {launcher} -- train --config FILE")
    return verb_args


def _verb_config(verb_args: Sequence[str]) -> Config | None:
    """The config the launched verb will load, loaded and validated here so that a typo fails in a
    second instead of on every rank, or in the queue (None for verbs without a config of their own)."""
    from pipeline.config.eval import EvalJobConfig
    from pipeline.config.finetune import FinetuneJobConfig
    from pipeline.config.train import TrainJobConfig

    args = build_parser().parse_args(verb_args)
    loaders: dict[Callable[[argparse.Namespace], int], Callable[[], Config]] = {
        _run_train: lambda: _load(TrainJobConfig, args, init_from=args.init_from, **{"checkpoint.resume": args.resume}),
        _run_finetune: lambda: _load(FinetuneJobConfig, args, init_from=args.init_from),
        _run_eval: lambda: _load(EvalJobConfig, args, **_eval_flags(args)),
    }
    loader = loaders.get(getattr(args, "run", None))  # type: ignore[arg-type]
    return loader() if loader else None


def _run_launch_torchrun(args: argparse.Namespace) -> int:
    from launch.torchrun import run_torchrun, torchrun_command

    verb_args = _verb_args(args, "torchrun")
    _verb_config(verb_args)
    options = dict(nproc_per_node=args.nproc_per_node, nnodes=args.nnodes, node_rank=args.node_rank,
                   rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id)
    if args.dry_run:
        import shlex

        print(shlex.join(torchrun_command(verb_args, **options)))
        return 0
    return run_torchrun(verb_args, **options)


def _run_launch_deepspeed(args: argparse.Namespace) -> int:
    from launch.deepspeed import DeepSpeedLaunch, deepspeed_command, run_deepspeed

    verb_args = _verb_args(args, "deepspeed")
    _verb_config(verb_args)
    launch = DeepSpeedLaunch(hostfile=args.hostfile, num_nodes=args.num_nodes, num_gpus=args.num_gpus,
                             include=args.include, exclude=args.exclude, master_addr=args.master_addr,
                             master_port=args.master_port)
    if args.dry_run:
        import shlex

        print(shlex.join(deepspeed_command(verb_args, launch)))
        return 0
    return run_deepspeed(verb_args, launch)


def _run_launch_slurm(args: argparse.Namespace) -> int:
    from launch.checks import preflight
    from launch.slurm import SlurmJob, render_sbatch, submit
    from launch.slurm_profile import SlurmProfile

    verb_args = _verb_args(args, "slurm")
    profile = SlurmProfile.load(args.profile, args.set, values={"nodes": args.nodes,
                                                                 "gpus_per_node": args.gpus_per_node})
    if args.array_configs and "--config" in verb_args:
        raise ValueError("--array-configs gives each element its --config; leave --config out of the verb's arguments")
    if args.array_configs:
        configs = [_verb_config([verb_args[0], "--config", path, *verb_args[1:]]) for path in args.array_configs]
        if None in configs:
            raise ValueError(f"--array-configs runs a verb that takes --config (train, finetune, eval), "
                             f"not {verb_args[0]}")
    else:
        configs = [_verb_config(verb_args)]
    job_name = args.job_name or f"lmpipe-{verb_args[0]}"
    if args.dry_run:
        job = SlurmJob(tuple(verb_args), job_name, os.getcwd(), tuple(args.array_configs), args.max_parallel,
                       args.launcher)
        print(render_sbatch(profile, job), end="")
        return 0

    checks = preflight(profile, configs)
    for check in checks:
        print(f"lmpipe: {'ok' if check.ok else 'FAILED'}: {check.line}", file=sys.stderr)
    if not all(check.ok for check in checks):
        return 2
    # The script is kept with the run it starts; an array's, and a config-less verb's, with the logs.
    output_dir = getattr(configs[0], "output_dir", "") if not args.array_configs else ""
    home = Path(output_dir) / "slurm" if output_dir else Path(profile.log_dir)
    # Each element reads a resolved copy: later edits of the user's files do not change queued jobs.
    resolved = [str(cfg.save(home / f"{job_name}-configs" / f"{index}.yaml").resolve())  # type: ignore[union-attr]
                for index, cfg in enumerate(configs)] if args.array_configs else []
    job = SlurmJob(tuple(verb_args), job_name, os.getcwd(), tuple(resolved), args.max_parallel, args.launcher)
    script = home / f"{job_name}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(render_sbatch(profile, job))
    job_id = submit(script)
    log = f"{job_name}-{job_id}_<index>.out" if resolved else f"{job_name}-{job_id}.out"
    print(f"lmpipe: submitted {script} as job {job_id}; log {Path(profile.log_dir) / log}", file=sys.stderr)
    print(job_id)
    return 0



def _run_launch_status(args: argparse.Namespace) -> int:
    from launch.slurm_status import format_states, job_states

    states = job_states(args.job_id)
    if not states:
        print(f"lmpipe: job {args.job_id}: neither slurmctld (scontrol) nor accounting (sacct) knows it: a wrong id, "
              "or it ended more than MinJobAge ago on a cluster without accounting", file=sys.stderr)
        return 1
    print(format_states(states))
    return 0
