"""LoRA fine-tuning (``pipeline.lora``): the adapted model starts as the base model exactly, only adapters
train, and every loader of a LoRA checkpoint (eval, generate, export hf, --init-from) gets merged weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from pipeline.config.eval import EvalJobConfig, EvalTrackingConfig, GenerateJobConfig
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.errors import ConfigError
from pipeline.eval.evaluate import evaluate
from pipeline.eval.generate import generate
from pipeline.finetune.run import finetune
from pipeline.hf.export import export_hf
from pipeline.model.args import ModelArgs
from pipeline.model.lora import LoRALinear, apply_lora, is_adapter, merged_state_dict, parameter_counts
from pipeline.model.lora_config import LORA_TARGETS, LoRAConfig
from pipeline.model.transformer import Block, build_model
from pipeline.parallel.dcp import load_model_weights, quiet_without_process_group
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.init import init_on_cpu
from pipeline.parallel.registry import parallelize
from pipeline.testing import require_module
from pipeline.train.checkpoint import load_model_for_inference, read_meta, resolve_checkpoint

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
LORA = LoRAConfig(rank=4, alpha=8.0)


def plain_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return init_on_cpu(build_model(ARGS))


def lora_model(cfg: LoRAConfig = LORA, *, base: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Adapters (drawn from ``seed``) on a copy of ``base``'s weights."""
    torch.manual_seed(seed)
    model = init_on_cpu(apply_lora(build_model(ARGS), cfg))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(is_adapter(key) for key in missing)
    return model


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, ARGS.vocab_size, (2, ARGS.seq_len), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora.rank=-1", "config error: lora.rank: must be >= 0"),
        (
            "lora.targets=[wq,q_proj]",
            "config error: lora.targets: unknown projection 'q_proj'; valid: wq, wk",
        ),
        ("lora.targets=[]", "config error: lora.targets: name at least one of"),
        ("lora.targets=[wq,wq]", "config error: lora.targets: names a projection twice"),
        ("lora.alpha=0", "config error: lora.alpha: must be > 0"),
        ("lora.dropout=1.0", "config error: lora.dropout: must be in [0, 1)"),
        (
            "lora.ranks=4",
            "config error: unknown key 'lora.ranks'; valid keys under 'lora': rank, alpha, dropout, targets",
        ),
    ],
)
def test_bad_lora_config_is_one_clear_line(override, message):
    with pytest.raises(ConfigError) as error:
        FinetuneJobConfig.load(None, ["init_from=c", "data.path=p", override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_lora_defaults_off_on_the_attention_projections():
    cfg = FinetuneJobConfig.load(None, ["init_from=c", "data.path=p"]).lora
    assert (cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.enabled) == (
        0,
        16.0,
        0.0,
        ["wq", "wk", "wv", "wo"],
        False,
    )


def test_the_config_knows_the_models_projections():
    """The torch-free list the config checks names against is every Linear of a block, and nothing else."""
    linears = {
        name.rsplit(".", 1)[-1]
        for name, module in Block(ARGS).named_modules()
        if isinstance(module, nn.Linear)
    }
    assert linears == set(LORA_TARGETS)


# -------------------------------------------------------------------------------------------------- model


def test_adapted_model_starts_as_the_base_model_exactly():
    base = plain_model()
    adapted = lora_model(base=base)
    with torch.no_grad():
        assert torch.equal(adapted(tokens()), base(tokens()))
    assert sum(isinstance(m, LoRALinear) for m in adapted.modules()) == ARGS.n_layers * 4
    assert all(
        bool(m.lora_A.detach().abs().sum() > 0) and not m.lora_B.detach().any()
        for m in adapted.modules()
        if isinstance(m, LoRALinear)
    )


def test_merged_weights_compute_the_adapted_logits():
    base = plain_model()
    adapted = lora_model(LoRAConfig(rank=4, alpha=8.0, targets=list(LORA_TARGETS)), base=base)
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(std=0.05)
    merged = plain_model(seed=2)
    merged.load_state_dict(merged_state_dict(adapted))  # strict: exactly the plain model's keys
    with torch.no_grad():
        ours, theirs = adapted(tokens()), merged(tokens())
        diff = float((ours - theirs).abs().max())
        assert diff <= 1e-5, diff
        assert float((ours - base(tokens())).abs().max()) > 1e-2  # the adapters do change the logits


def test_only_adapters_train_and_reach_the_optimizer():
    torch.manual_seed(0)
    model = apply_lora(build_model(ARGS), LoRAConfig(rank=2, alpha=4.0, targets=["wq", "w2"]))
    trainable, total = parameter_counts(model)
    adapters = {name for name, p in model.named_parameters() if p.requires_grad}
    assert adapters == {
        f"layers.{i}.{where}.{ab}"
        for i in range(ARGS.n_layers)
        for where in ("attention.wq", "feed_forward.w2")
        for ab in ("lora_A", "lora_B")
    }
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    assert total == build_model(ARGS).num_params(non_embedding=False) + trainable

    loop = LoopConfig(global_batch_size=2, micro_batch_size=2, warmup_steps=0, lr=1e-2, weight_decay=0.1)
    parallel = parallelize(model, strategy="ddp", dist=DistInfo(), loop=loop, total_steps=3)
    in_optimizer = {id(p) for group in parallel.optimizer.param_groups for p in group["params"]}
    by_id = {id(p): name for name, p in parallel.model.named_parameters()}
    assert {by_id[i] for i in in_optimizer} == adapters
    frozen = {
        name: p.detach().clone() for name, p in parallel.model.named_parameters() if not p.requires_grad
    }
    inputs = tokens()
    for _ in range(2):
        _, loss = parallel(inputs[:, :-1], inputs[:, 1:])
        parallel.backward(loss)
        parallel.step()
    assert {by_id[id(p)] for p in parallel.optimizer.state} == adapters  # no Adam state for frozen weights
    assert all(
        torch.equal(p, frozen[name]) for name, p in parallel.model.named_parameters() if name in frozen
    )


# --------------------------------------------------------------------------------------- a LoRA fine-tune


def lora_finetune_config(
    pretrained: Path, tiny_corpus, output_dir: Path, *overrides: str
) -> FinetuneJobConfig:
    return FinetuneJobConfig.load(
        None,
        [
            f"init_from={pretrained}",
            f"output_dir={output_dir}",
            f"data.path={tiny_corpus[1]}",
            "data.val_fraction=0.1",
            "train.max_steps=8",
            "train.global_batch_size=8",
            "train.micro_batch_size=4",
            "train.warmup_steps=2",
            "train.lr=1e-2",
            "train.log_interval=1",
            "checkpoint.interval=4",
            "checkpoint.keep=3",
            "lora.rank=8",
            "lora.alpha=16",
            "tracking.enabled=false",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def lora_run(pretrained: Path, tiny_corpus, tmp_path_factory) -> dict:
    """One LoRA fine-tune (8 steps, checkpoints at 4 and 8) with MLflow on, shared by the read-only tests."""
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("lora") / "sft"
    printed = io.StringIO()
    with redirect_stdout(printed):
        result = finetune(lora_finetune_config(pretrained, tiny_corpus, out, "tracking.enabled=true"))
    return {"out": out, "result": result, "stdout": printed.getvalue()}


def step_losses(output: str) -> dict[int, str]:
    return {int(m[1]): m[2] for m in re.finditer(r"finetune step\s+(\d+)/\d+\s+(loss \S+)", output)}


def adapted_model(step_dir: Path) -> torch.nn.Module:
    """The LoRA model a checkpoint holds, adapters apart (not what the loaders give: they merge)."""
    meta = read_meta(step_dir)
    adapted = apply_lora(
        build_model(ModelArgs(**meta["model"]), device="cpu"), LoRAConfig.from_dict(meta["lora"])
    )
    adapted.to_empty(device="cpu")
    adapted.init_weights()  # the RoPE tables
    state = {"model": adapted.state_dict()}
    with quiet_without_process_group():
        dcp.load(state, checkpoint_id=str(step_dir), no_dist=True)
    adapted.load_state_dict(state["model"])
    return adapted.eval()


def test_lora_finetune_trains_only_the_adapters(lora_run, pretrained: Path):
    result, out = lora_run["result"], lora_run["out"]
    assert result.last_train_loss < result.first_train_loss
    assert result.final_val_loss < result.initial_val_loss * 0.9
    final = Path(result.checkpoint)
    meta = read_meta(final)
    assert meta["lora"] == {"rank": 8, "alpha": 16.0, "dropout": 0.0, "targets": ["wq", "wk", "wv", "wo"]}

    args = ModelArgs(**meta["model"])
    base = build_model(args, device="cpu")
    base.tie_weights()
    load_model_weights(base, resolve_checkpoint(pretrained))
    trained = adapted_model(final).state_dict()
    for name, tensor in base.state_dict().items():  # every base weight bit-identical to the init checkpoint
        assert torch.equal(trained[name], tensor), name
    adapters_b = [tensor for name, tensor in trained.items() if name.endswith("lora_B")]
    assert len(adapters_b) == args.n_layers * 4 and all(float(b.abs().max()) > 0 for b in adapters_b)

    trainable = int(
        re.search(
            r"LoRA rank 8 on wq, wk, wv, wo: ([\d,]+) of ([\d,]+) parameters train", lora_run["stdout"]
        )[1].replace(",", "")
    )
    # rank x (in + out) per adapter: wq and wo d <-> H*hd, wk and wv d -> KV*hd
    assert trainable == args.n_layers * 8 * (
        4 * args.d_model + 2 * args.n_heads * args.head_dim + 2 * args.n_kv_heads * args.head_dim
    )

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out.resolve()}/mlflow.db")
    params = client.get_run(result.mlflow_run_id).data.params
    assert int(params["params.trainable"]) == trainable
    assert int(params["params.total"]) == build_model(args).num_params(non_embedding=False) + trainable
    assert params["lora.rank"] == "8" and params["lora.targets"] == '["wq", "wk", "wv", "wo"]'


def test_loaders_merge_a_lora_checkpoint(lora_run, tiny_corpus):
    """What eval, generate and export read (load_model_for_inference) is the plain model with the adapters
    merged: the logits of the adapted model, and the fine-tune's own validation loss."""
    final = Path(lora_run["result"].checkpoint)
    merged, args, _ = load_model_for_inference(final)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    sample = torch.randint(0, args.vocab_size, (2, args.seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((merged(sample) - adapted_model(final)(sample)).abs().max())
    assert diff <= 1e-5, diff

    result = evaluate(
        EvalJobConfig(
            checkpoint=str(final),
            sft=str(tiny_corpus[1]),
            batch_size=4,
            tracking=EvalTrackingConfig(enabled=False),
        )
    )
    assert result["sft"]["loss"] == pytest.approx(lora_run["result"].final_val_loss, rel=1e-5)
    text = generate(
        GenerateJobConfig(
            checkpoint=str(final),
            prompt="Which river is Branford on?",
            chat=True,
            max_new_tokens=8,
            temperature=0,
        )
    )
    assert isinstance(text, str) and text


def test_lora_finetune_resumes_on_the_same_curve(lora_run, pretrained: Path, tiny_corpus, tmp_path, capsys):
    step_4 = Path(lora_run["result"].checkpoint).parent / "step_4"
    resumed = finetune(
        lora_finetune_config(pretrained, tiny_corpus, tmp_path / "again", f"checkpoint.resume={step_4}")
    )
    out = capsys.readouterr().out
    assert f"finetune resuming from {step_4}" in out
    whole = step_losses(lora_run["stdout"])
    again = step_losses(out)
    assert sorted(again) == [5, 6, 7, 8] and again == {step: whole[step] for step in again}
    assert resumed.final_val_loss == lora_run["result"].final_val_loss
    with pytest.raises(ValueError, match=r"was trained with LoRA rank=8.*this run asks for LoRA rank=4"):
        finetune(lora_finetune_config(pretrained, tiny_corpus, tmp_path / "again", "lora.rank=4"))
    with pytest.raises(ValueError, match=r"was trained with LoRA rank=8.*this run asks for no LoRA"):
        finetune(lora_finetune_config(pretrained, tiny_corpus, tmp_path / "again", "lora.rank=0"))


def test_init_from_a_lora_checkpoint_starts_from_the_merged_weights(lora_run, tiny_corpus, tmp_path):
    """``finetune --init-from`` (and ``train --init-from``: the same ``load(model_only=True)``) of a LoRA
    checkpoint: the merged weights, and fresh adapters on top when the new job has its own."""
    final = Path(lora_run["result"].checkpoint)
    merged, args, _ = load_model_for_inference(final)
    for lora in (LoRAConfig(), LoRAConfig(rank=2, targets=["w1"])):
        model = build_model(args)
        if lora.enabled:
            apply_lora(model, lora)
        torch.manual_seed(0)
        parallel = parallelize(model, strategy="ddp", dist=DistInfo(), loop=LoopConfig(), total_steps=1)
        parallel.load(final, model_only=True)
        with torch.no_grad():
            sample = torch.randint(0, args.vocab_size, (2, args.seq_len))
            assert float((parallel.model(sample) - merged(sample)).abs().max()) <= 1e-5
    again = finetune(
        lora_finetune_config(
            final,
            tiny_corpus,
            tmp_path / "plain",
            "lora.rank=0",
            "train.max_steps=1",
            "checkpoint.interval=0",
        )
    )
    assert again.initial_val_loss == pytest.approx(lora_run["result"].final_val_loss, rel=1e-5)


def test_lora_finetune_exports_to_transformers_with_our_logits(lora_run, tmp_path, monkeypatch):
    transformers = require_module("transformers")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    final = Path(lora_run["result"].checkpoint)
    out = export_hf(final, tmp_path / "hf")
    ours = adapted_model(final)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    sample = torch.randint(
        0, ours.args.vocab_size, (2, ours.args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        diff = float((hf(sample).logits - ours(sample)).abs().max())
    assert diff <= 1e-5, diff
    assert not any("lora" in name for name in hf.state_dict())
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
