"""``export hf`` / ``import hf``: our checkpoints as ``LlamaForCausalLM`` directories that ``transformers``
loads offline and that compute the same logits, and back again bit for bit."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipeline.cli.hf import add_parsers as add_export_import_parsers
from pipeline.cli.main import main
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import LoopConfig
from pipeline.core.files import TOKENIZER_FILE
from pipeline.finetune.data import ChatTokens
from pipeline.hf.export import export_hf
from pipeline.hf.importer import import_hf
from pipeline.hf.weights import parse_size
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.testing import require_module
from pipeline.train.checkpoint import (
    consolidate,
    load_model_for_inference,
    load_tokenizer,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from pipeline.train.step_files import DEFAULT_CHECKSUM_MAX_BYTES, write_checksums

transformers = require_module("transformers")

SENTENCE = "The quick brown fox, 13 lazy dogs and naïve café-goers."


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def hf_logits(directory, tokens: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        return model(tokens).logits


def our_logits(checkpoint, tokens: torch.Tensor) -> torch.Tensor:
    model, _, _ = load_model_for_inference(checkpoint)
    with torch.no_grad():
        return model(tokens)


def sample_tokens(args: ModelArgs) -> torch.Tensor:
    return torch.randint(0, args.vocab_size, (2, args.seq_len), generator=torch.Generator().manual_seed(0))


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def test_export_loads_in_transformers_with_our_logits_and_token_ids(pretrained, tmp_path):
    out = export_hf(pretrained, tmp_path / "hf")
    args = ModelArgs(**read_meta(resolve_checkpoint(pretrained))["model"])
    tokens = sample_tokens(args)
    diff = (hf_logits(out, tokens) - our_logits(pretrained, tokens)).abs().max().item()
    assert diff <= 1e-5, diff

    ours = load_tokenizer(resolve_checkpoint(pretrained) / TOKENIZER_FILE)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    assert theirs(SENTENCE)["input_ids"] == ours.encode(SENTENCE).ids
    assert theirs.decode(ours.encode(SENTENCE).ids) == SENTENCE
    # EOS is also BOS: training puts EOS before every document, so a harness prefixing BOS conditions alike.
    assert (theirs.eos_token, theirs.pad_token, theirs.bos_token) == ("<|eos|>", "<|pad|>", "<|eos|>")

    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == args.seq_len and config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == config["bos_token_id"] == ours.token_to_id("<|eos|>")
    assert {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}["model.safetensors"] == (
        (out / "config.json").stat().st_mode & 0o777
    )  # readable by whoever can read its siblings
    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # tied: the embedding serves as head
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())  # pretrained only
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == generation.bos_token_id == config["eos_token_id"]


def test_sharded_export_loads_the_same_weights(pretrained, tmp_path):
    whole = export_hf(pretrained, tmp_path / "whole")
    sharded = export_hf(pretrained, tmp_path / "sharded", max_shard_size=100_000)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (sharded / "model.safetensors").exists()
    assert all(
        shard.stat().st_size <= 100_000 + 10_000 or len(load_file(shard)) == 1
        for shard in map(sharded.joinpath, files)
    )  # 10 kB: the safetensors header
    assert states_equal(
        transformers.AutoModelForCausalLM.from_pretrained(whole),
        transformers.AutoModelForCausalLM.from_pretrained(sharded),
    )


def test_import_of_export_is_bit_identical(pretrained, tmp_path):
    exported = export_hf(pretrained, tmp_path / "hf", max_shard_size="200kB")
    step_dir = import_hf(exported, tmp_path / "imported")
    assert step_dir == tmp_path / "imported" / "checkpoints" / "step_0"
    assert resolve_checkpoint(tmp_path / "imported") == step_dir
    original, original_args, _ = load_model_for_inference(pretrained)
    imported, imported_args, tokenizer = load_model_for_inference(tmp_path / "imported")
    assert imported_args == original_args
    assert read_meta(step_dir)["model"] == read_meta(resolve_checkpoint(pretrained))["model"]
    assert states_equal(imported, original)
    assert imported.output.weight is imported.tok_embeddings.weight
    assert (
        tokenizer.encode(SENTENCE).ids
        == load_tokenizer(resolve_checkpoint(pretrained) / TOKENIZER_FILE).encode(SENTENCE).ids
    )


def test_eval_of_an_imported_model_works_with_default_settings(pretrained, tmp_path, monkeypatch, capsys):
    """``import hf`` then ``eval`` with tracking on (the default): metrics go to a new run in the import's
    own store, and the scores equal the original checkpoint's."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import_hf(export_hf(pretrained, tmp_path / "hf"), tmp_path / "imported")
    task = tmp_path / "task.jsonl"
    task.write_text(
        json.dumps({"context": "Branford lies on the", "choices": [" river", " wool"], "answer": 0})
    )
    results = {}
    for name, checkpoint in (("imported", tmp_path / "imported"), ("original", pretrained)):
        out = tmp_path / f"{name}.json"
        flags = ["--new-run"] if name == "original" else []
        assert (
            main(["eval", "--checkpoint", str(checkpoint), "--mc", str(task), "--output", str(out), *flags])
            == 0
        )
        results[name] = json.loads(out.read_text())
    assert results["imported"]["mc"]["log_likelihoods"][0] == pytest.approx(
        results["original"]["mc"]["log_likelihoods"][0]
    )
    run = MlflowClient(results["imported"]["mlflow"]["uri"]).get_run(results["imported"]["mlflow"]["run_id"])
    assert results["imported"]["mlflow"]["uri"] == f"sqlite:///{tmp_path / 'imported'}/mlflow.db"
    assert run.data.metrics["eval/mc/task/acc"] == results["imported"]["mc"]["acc"]


def test_consolidated_file_exports_like_its_checkpoint(pretrained, tmp_path):
    consolidated = consolidate(pretrained, tmp_path / "model.safetensors")
    from_file = export_hf(consolidated, tmp_path / "from_file", dtype="bfloat16")
    from_dir = export_hf(pretrained, tmp_path / "from_dir", dtype="bfloat16")
    a, b = load_file(from_file / "model.safetensors"), load_file(from_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    assert transformers.AutoModelForCausalLM.from_pretrained(from_file).dtype == torch.bfloat16


def test_untied_model_exports_its_head(pretrained, tmp_path):
    args = ModelArgs(
        vocab_size=300,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        seq_len=32,
        ffn_hidden=96,
        tie_embeddings=False,
        rope_theta=500000.0,
        norm_eps=1e-6,
    )
    torch.manual_seed(0)
    parallel = parallelize(
        build_model(args), strategy="ddp", dist=DistInfo(), loop=LoopConfig(), total_steps=1
    )
    checkpoint = save_checkpoint(
        tmp_path / "untied",
        parallel=parallel,
        dist=DistInfo(),
        step=0,
        tokens_seen=0,
        config=FinetuneJobConfig(init_from="x"),
        model_args=args,
        tokenizer_file=resolve_checkpoint(pretrained) / TOKENIZER_FILE,
        loader_state={},
        mlflow_run_id=None,
        seed=0,
        keep=1,
    )
    out = export_hf(checkpoint, tmp_path / "hf")
    assert "lm_head.weight" in load_file(out / "model.safetensors")
    tokens = sample_tokens(args)
    diff = (hf_logits(out, tokens) - our_logits(checkpoint, tokens)).abs().max().item()
    assert diff <= 1e-5, diff
    imported, imported_args, _ = load_model_for_inference(import_hf(out, tmp_path / "imported"))
    assert imported_args == args and states_equal(imported, parallel.model)


def test_fine_tuned_model_gets_our_chat_template(pretrained, tmp_path):
    step_dir = tmp_path / "sft" / "checkpoints" / "step_40"
    shutil.copytree(resolve_checkpoint(pretrained), step_dir)
    FinetuneJobConfig(init_from=str(pretrained)).save(step_dir / "config.yaml")
    write_checksums(step_dir, hash_max_bytes=DEFAULT_CHECKSUM_MAX_BYTES)  # as a fine-tuning job saves it
    out = export_hf(step_dir, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_tokenizer(step_dir / TOKENIZER_FILE)
    chat = ChatTokens.of(ours, step_dir)
    prompt, response = "Where is Stavwick?", "In the north."
    prompt_ids = [chat.user, *ours.encode(prompt).ids, chat.assistant]  # as generate --chat and sft_data
    turn = [{"role": "user", "content": prompt}]
    assert (
        list(
            theirs.apply_chat_template(turn, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        == prompt_ids
    )
    whole = theirs.apply_chat_template(
        [*turn, {"role": "assistant", "content": response}], tokenize=True, return_dict=True
    )["input_ids"]
    assert list(whole) == [*prompt_ids, *ours.encode(response).ids, chat.eos]


def write_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "model_type 'mistral'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope scaling"),
        ({"attention_bias": True, "mlp_bias": True}, "attention_bias true (no biases); mlp_bias true"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"head_dim": 64}, "head_dim 64"),
    ],
)
def test_unsupported_config_is_one_clear_line(pretrained, tmp_path, changes, message):
    hf_dir = export_hf(pretrained, tmp_path / "hf")
    write_config(hf_dir, **changes)
    with pytest.raises(ValueError, match="unsupported model") as error:
        import_hf(hf_dir, tmp_path / "out")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_or_wrong_files_are_clear_errors(pretrained, tmp_path):
    hf_dir = export_hf(pretrained, tmp_path / "hf", max_shard_size="300kB")
    with pytest.raises(ValueError, match="exists and is not an empty directory"):
        export_hf(pretrained, hf_dir)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_hf(tmp_path / "nowhere", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="Hugging Face model directory not found"):
        import_hf(tmp_path / "nowhere", tmp_path / "x")

    shard = sorted(hf_dir.glob("model-*.safetensors"))[-1]
    shard.rename(shard.with_suffix(".bak"))
    with pytest.raises(
        FileNotFoundError, match=f"shard {shard.name}, listed in model.safetensors.index.json"
    ):
        import_hf(hf_dir, tmp_path / "x")
    shard.with_suffix(".bak").rename(shard)

    write_config(hf_dir, num_hidden_layers=5)
    with pytest.raises(ValueError, match=r"weights lack \d+ tensor\(s\).*model\.layers\.4\."):
        import_hf(hf_dir, tmp_path / "x")
    write_config(hf_dir, num_hidden_layers=4, intermediate_size=100)
    with pytest.raises(ValueError, match="weights do not fit config.json"):
        import_hf(hf_dir, tmp_path / "x")

    (hf_dir / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        import_hf(hf_dir, tmp_path / "x")
    (hf_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        import_hf(hf_dir, tmp_path / "x")

    with pytest.raises(ValueError, match="not a size"):
        parse_size("five gigs")
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(123) == 123


def test_cli_export_then_import(pretrained, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="lmpipe")
    add_export_import_parsers(parser.add_subparsers())
    export = parser.parse_args(
        [
            "export",
            "hf",
            str(pretrained),
            "--output",
            str(tmp_path / "hf"),
            "--dtype",
            "bfloat16",
            "--max-shard-size",
            "1MB",
        ]
    )
    assert export.run(export) == 0
    imported = parser.parse_args(
        ["import", "hf", str(tmp_path / "hf"), "--output", str(tmp_path / "out"), "--seq-len", "32"]
    )
    assert imported.run(imported) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {tmp_path / 'hf'}",
        f"wrote {tmp_path / 'out' / 'checkpoints' / 'step_0'}",
    ]
    model, args, _ = load_model_for_inference(tmp_path / "out")
    assert args.seq_len == 32 and model.tok_embeddings.weight.dtype == torch.float32
