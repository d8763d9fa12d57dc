"""The GPU machine's set-up, rehearsed on CPU: `make wheelhouse` collects what its image lacks, and
`make setup WHEELS=dir` installs from that folder alone over the image's own torch, then trains.

The "image" is a fresh venv that sees only what the GPU image preinstalls that training needs (torch,
numpy, pyarrow, tokenizers, safetensors and what they require): this environment's copies, linked into
a folder its site-packages names, as an image's system site-packages would be (installing them afresh
took a minute of the suite's CPU, nearly all of it unpacking torch). The offline install then runs with
pip's configuration and index switched off, so a wheel missing from the wheelhouse fails it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from pipeline.testing import write_random_shards

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGE_PACKAGES = ["numpy", "pyarrow", "tokenizers", "safetensors"]
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    # Not the calling make's variables (`make test` exports them): each make here gets only its own.
    environment = {key: value for key, value in os.environ.items() if key not in MAKE_VARIABLES} | env
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=environment, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def image_packages(names: list[str]) -> list[importlib.metadata.Distribution]:
    """``names`` and every distribution they require (extras left out), as this environment has them."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        distribution = importlib.metadata.distribution(todo.pop())
        name = distribution.metadata["Name"].lower().replace("_", "-")
        if name in found:
            continue
        found[name] = distribution
        for requirement in map(Requirement, distribution.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def preinstall(image: Path, packages: Path, names: list[str]) -> None:
    """Make ``names`` importable (and known to pip) in the venv ``image`` as an image's own packages:
    links to their top-level files in ``packages``, which a .pth file in the venv's site-packages names."""
    packages.mkdir()
    for distribution in image_packages(names):
        tops = {file.parts[0] for file in distribution.files or []}
        for top in tops - {"..", "__pycache__"}:
            source = Path(str(distribution.locate_file(top)))
            if source.exists() and not top.endswith(".pth") and not (packages / top).exists():
                (packages / top).symlink_to(source)
    (site_packages,) = image.glob("lib/python*/site-packages")
    (site_packages / "image-packages.pth").write_text(f"{packages}\n")


def test_wheelhouse_installs_offline_over_the_images_torch_and_trains_with_zero(tmp_path):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("the wheelhouse builds DeepSpeed from the installed version; this environment has none")
    wheels = tmp_path / "wheels"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    run(["make", "wheelhouse", f"WHEELS={wheels}", f"PY_VERSION={version}"])
    assert any(wheels.glob("deepspeed-*-py3-none-any.whl"))  # pure Python: no op compiled for any GPU

    image = tmp_path / "image"
    venv.create(image, with_pip=True)
    python = str(image / "bin" / "python")
    preinstall(image, tmp_path / "image-packages", ["torch", *IMAGE_PACKAGES])
    assert run([python, "-c", "import torch; print(torch.__version__)"]).stdout.strip() == torch.__version__

    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    done = run(["make", "setup", f"WHEELS={wheels}", f"VENV={image}"], **offline)
    assert f"offline set-up: torch {torch.__version__}" in done.stdout
    missing = "import importlib.util as u; print([m for m in ('mlflow', 'datasets') if u.find_spec(m)])"
    assert run([python, "-c", missing]).stdout.strip() == "[]"  # as on the image: training needs neither

    shards = tmp_path / "shards"
    write_random_shards(shards, {"train": [300] * 40, "val": [300] * 8}, vocab_size=300)
    out = tmp_path / "run-zero2"  # ZeRO trains through DeepSpeed's engine and torch's autograd alike
    run(
        [
            python,
            "-m",
            "pipeline.cli",
            "train",
            "--config",
            "configs/train/tiny.yaml",
            f"data.shards={shards}",
            f"output_dir={out}",
            "parallel.strategy=zero2",
            "tracking.enabled=false",
            "checkpoint.interval=0",
            "train.max_steps=3",
            "model.seq_len=32",
            "model.vocab_size=300",
            "train.global_batch_size=4",
            "train.micro_batch_size=4",
        ]  # fmt: skip
    )
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 3 and result["final_val_loss"] < 7.0
