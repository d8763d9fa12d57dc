"""The CLI contract: every verb has --help; user errors are one line on stderr and exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.main import main

VERBS = [
    ["demo"],
    ["data", "prep"],
    ["data", "train-tokenizer"],
    ["data", "tokenize"],
    ["data", "stats"],
    ["train"],
    ["finetune"],
    ["eval"],
    ["generate"],
    ["launch", "torchrun"],
    ["launch", "deepspeed"],
    ["launch", "slurm"],
    ["sweep", "fit"],
    ["sweep", "compare"],
    ["export", "hf"],
    ["import", "hf"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    assert f"usage: lmpipe {' '.join(verb)}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "data.shards=s", "train.lrr=1"], "unknown key 'train.lrr'"),
        (["train", "data.shards=s", "model.n_heads=3"], "model.n_heads"),
        (["train"], "data.shards"),
        (["data", "prep", "--output", "o"], "input"),
        (["finetune", "data.path=x.jsonl"], "init_from"),
        (["eval", "--checkpoint", "c"], "shards"),
        (["train", "--config", "/nonexistent.yaml", "data.shards=s"], "/nonexistent.yaml"),
    ],
)
def test_user_errors_are_one_line(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmpipe: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_input_path_is_named(tmp_path: Path, capsys):
    missing = tmp_path / "nowhere.warc.gz"
    assert main(["data", "prep", "--input", str(missing), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1


def test_console_script_runs():
    script = Path(sys.executable).parent / "lmpipe"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for verb in ("demo", "data", "train", "finetune", "eval", "generate", "launch"):
        assert verb in result.stdout


HEAVY = ("torch", "mlflow", "deepspeed", "transformers")
"""Each costs seconds of CPU to import; a verb imports what it needs once its config is valid."""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["launch", "torchrun", "--dry-run", "--nproc-per-node", "2", "--", "train", "train.max_steps=3"],
    ],
)
def test_the_cli_and_a_launcher_import_no_heavy_library(argv):
    """``lmpipe --help`` and the launcher process a torchrun job starts under import none of torch,
    MLflow, DeepSpeed or transformers (the memory planner once pulled in torch for one constant: 4 s of CPU
    on every ``lmpipe`` call)."""
    code = (
        "import sys\nfrom pipeline.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:] + out.stderr[-2000:]
