"""Hugging Face weight files: one ``model.safetensors``, or shards and the index ``from_pretrained``
follows, written and read by the names ``names.hf_names`` gives."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.errors import ConfigError, MissingInputError
from pipeline.core.files import atomic_write_json
from pipeline.hf.names import WEIGHTS, WEIGHTS_INDEX, read_json_object

DEFAULT_MAX_SHARD_SIZE = "5GB"


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``5GB``, ``500MB``, ``2GiB`` (decimal and binary units, as
    HF)."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise ConfigError(f"max shard size {size!r} is not a size such as 5GB, 500MB or 1000000")
        unit = (match.group(2) or "B").upper()
        scale = (1024 if "I" in unit else 1000) ** "BKMGT".index(unit[0])
        value = int(float(match.group(1)) * scale)
    if value <= 0:
        raise ConfigError(f"max shard size must be positive, not {size!r}")
    return value


def write_sharded(tensors: dict[str, torch.Tensor], directory: Path, *, max_shard_bytes: int) -> list[Path]:
    """``model.safetensors``, or as many files of at most ``max_shard_bytes`` as it takes (a larger tensor
    gets one to itself) and the index that ``from_pretrained`` follows; returns the files written."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS), metadata={"format": "pt"})
        _mode_as_siblings(directory / WEIGHTS)
        return [directory / WEIGHTS]
    files = [directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for shard, path in zip(shards, files):
        save_file(shard, str(path), metadata={"format": "pt"})
        _mode_as_siblings(path)
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
        "weight_map": {name: path.name for shard, path in zip(shards, files) for name in shard},
    }
    atomic_write_json(directory / WEIGHTS_INDEX, index)
    return files


def _mode_as_siblings(path: Path) -> None:
    """Give ``path`` the mode a plain new file gets (0644 under the usual umask): ``save_file`` leaves
    0600, which other users of a shared model directory could not read."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors``, or of the shards its index lists, by HF name."""
    if (hf_dir / WEIGHTS).is_file():
        return load_file(str(hf_dir / WEIGHTS))
    if not (hf_dir / WEIGHTS_INDEX).is_file():
        raise MissingInputError(
            f"{hf_dir}: no {WEIGHTS} or {WEIGHTS_INDEX} (only safetensors weights are read, "
            "not pytorch_model.bin)"
        )
    weight_map = read_json_object(hf_dir / WEIGHTS_INDEX).get("weight_map", {})
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (hf_dir / shard).is_file():
            raise MissingInputError(f"{hf_dir}: shard {shard}, listed in {WEIGHTS_INDEX}, is missing")
        tensors.update(load_file(str(hf_dir / shard)))
    return tensors
