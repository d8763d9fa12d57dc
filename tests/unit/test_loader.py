import numpy as np
import pyarrow as pa
import pytest
import torch

from data_prep.tokenizer.manifest import build_manifest, write_manifest
from data_prep.tokenizer.shards import ShardWriter
from pipeline.data import TokenLoader, TokenWindows, eval_batches, load_manifest, unigram_perplexity

VOCAB = 300


def make_shards(root, docs_by_split: dict[str, list[int]], *, shard_size_bytes=200, seed=0) -> dict[str, np.ndarray]:
    """Shards of random tokens, documents of the given lengths; returns each split's flat stream."""
    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True)
    streams, entries = {}, []
    for split, lengths in docs_by_split.items():
        lengths = np.array(lengths)
        stream = rng.integers(0, VOCAB, lengths.sum()).astype(np.uint16)
        half = len(lengths) // 2  # two sources, so the stream spans several shard series
        for source, (docs, tokens) in {"cc": (lengths[:half], stream[:lengths[:half].sum()]),
                                       "wiki": (lengths[half:], stream[lengths[:half].sum():])}.items():
            writer = ShardWriter(root, split=split, source=source, task=0, dtype=np.uint16,
                                 shard_size_bytes=shard_size_bytes)
            writer.add(tokens, docs)
            entries += writer.close()
        streams[split] = stream
    tokenizer = {"path": "tokenizer.json", "sha256": "", "vocab_size": VOCAB, "eos_id": 1, "bos_id": 0, "pad_id": 2}
    write_manifest(root, build_manifest(tokenizer=tokenizer, dtype="uint16", shards=entries, config={}, command=""))
    return streams


@pytest.fixture
def data(tmp_path):
    streams = make_shards(tmp_path, {"train": [37, 5, 80, 13, 64, 21, 9, 50], "val": [30, 41, 12, 25]})
    return tmp_path, streams


def test_windows_cover_the_stream_across_shards(data):
    root, streams = data
    windows = TokenWindows(root, "train", seq_len=16)
    assert len(windows.chunks) > 3
    assert windows.num_tokens == len(streams["train"]) == 279
    assert windows.num_windows == (279 - 1) // 16 == 17
    for i in range(windows.num_windows):
        window = windows.window(i)
        assert window.dtype == np.int64 and window.shape == (17,)
        np.testing.assert_array_equal(window, streams["train"][i * 16: i * 16 + 17])
    with pytest.raises(IndexError):
        windows.window(17)


def test_chunks_are_zero_copy_views_of_the_mapped_files(data):
    root, _ = data
    allocated = pa.total_allocated_bytes()
    windows = TokenWindows(root, "train", seq_len=16)
    assert pa.total_allocated_bytes() == allocated
    regions = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) == 6 and fields[5].startswith(str(root / "shards")):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end))
    for chunk in windows.chunks:
        assert not chunk.flags.writeable
        address = chunk.ctypes.data
        assert any(start <= address and address + chunk.nbytes <= end for start, end in regions)


def test_empty_or_short_split_names_the_dir_and_split(data):
    root, _ = data
    with pytest.raises(ValueError, match=f"no 'test' tokens in {root}"):
        TokenWindows(root, "test", seq_len=16)
    with pytest.raises(ValueError, match=f"the 'val' split of {root} has 108 tokens"):
        TokenWindows(root, "val", seq_len=200)


def take(loader, n):
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


def test_batches_are_windows_with_shifted_targets(data):
    root, streams = data
    loader = TokenLoader(root, seq_len=16, batch_size=4, seed=3)
    windows = TokenWindows(root, "train", seq_len=16)
    permutation = np.random.default_rng((3, 0)).permutation(windows.num_windows)
    inputs, targets = take(loader, 1)[0]
    assert inputs.shape == targets.shape == (4, 16) and inputs.dtype == targets.dtype == torch.int64
    for row, w in enumerate(permutation[:4]):
        np.testing.assert_array_equal(inputs[row].numpy(), windows.window(w)[:-1])
        np.testing.assert_array_equal(targets[row].numpy(), windows.window(w)[1:])


def test_each_epoch_is_a_fresh_permutation_of_all_windows(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=1)  # 17 windows
    seen = [tuple(x[0].tolist()) for x, _ in take(loader, 34)]
    windows = TokenWindows(root, "train", seq_len=16)
    everything = sorted(tuple(windows.window(i)[:-1].tolist()) for i in range(17))
    assert sorted(seen[:17]) == sorted(seen[17:]) == everything
    assert seen[:17] != seen[17:]
    assert loader.epoch == 2 and loader.state_dict() == {"seed": 0, "epoch": 2, "sample_index": 34}


def test_two_ranks_split_the_one_rank_sequence(data):
    root, _ = data
    single = take(TokenLoader(root, seq_len=16, batch_size=4, seed=7), 6)  # crosses an epoch boundary
    ranks = [take(TokenLoader(root, seq_len=16, batch_size=2, seed=7, rank=r, world_size=2), 6) for r in range(2)]
    for step, (inputs, targets) in enumerate(single):
        assert torch.equal(ranks[0][step][0], inputs[0::2]) and torch.equal(ranks[1][step][0], inputs[1::2])
        assert torch.equal(ranks[0][step][1], targets[0::2]) and torch.equal(ranks[1][step][1], targets[1::2])


def test_resume_continues_exactly(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=3, seed=1)
    iterator = iter(loader)
    for _ in range(7):
        next(iterator)
    state = loader.state_dict()
    expected = [next(iterator) for _ in range(4)]
    resumed = TokenLoader(root, seq_len=16, batch_size=3, seed=99)
    resumed.load_state_dict(state)
    assert resumed.seed == 1 and resumed.epoch == state["epoch"] == 1
    for (x, y), (ex, ey) in zip(take(resumed, 4), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_resume_at_another_world_size_continues_the_global_sequence(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=4, seed=5)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    expected = [next(iterator) for _ in range(5)]
    ranks = []
    for rank in range(2):
        resumed = TokenLoader(root, seq_len=16, batch_size=2, seed=5, rank=rank, world_size=2)
        resumed.load_state_dict(state)
        ranks.append(take(resumed, 5))
    for step, (inputs, _) in enumerate(expected):
        assert torch.equal(ranks[0][step][0], inputs[0::2]) and torch.equal(ranks[1][step][0], inputs[1::2])


def test_state_from_other_data_is_refused(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=1)
    with pytest.raises(ValueError, match="does not fit the 17 windows"):
        loader.load_state_dict({"seed": 0, "epoch": 0, "sample_index": 40})


def test_eval_batches_in_order_and_sharded(data):
    root, streams = data
    windows = TokenWindows(root, "val", seq_len=8)  # 107 // 8 = 13 windows
    everything = [x for x, _ in eval_batches(root, seq_len=8, batch_size=5)]
    assert [len(x) for x in everything] == [5, 5, 3]
    np.testing.assert_array_equal(torch.cat(everything).numpy(), [windows.window(i)[:-1] for i in range(13)])
    ranks = [[x for x, _ in eval_batches(root, seq_len=8, batch_size=4, rank=r, world_size=2)] for r in range(2)]
    assert [len(x) for x in ranks[0]] == [len(x) for x in ranks[1]] == [4, 2]  # window 12 is left out
    assert torch.equal(torch.cat(ranks[0]), torch.cat(everything)[0:12:2])
    assert torch.equal(torch.cat(ranks[1]), torch.cat(everything)[1:12:2])
    assert len(list(eval_batches(root, seq_len=8, batch_size=5, max_batches=2))) == 2


def test_unigram_perplexity_matches_numpy(data):
    root, streams = data
    counts = np.bincount(streams["train"], minlength=VOCAB)
    probs = (counts + 1) / (counts.sum() + VOCAB)
    expected = np.exp(-np.mean(np.log(probs[streams["val"]])))
    assert unigram_perplexity(root) == pytest.approx(expected, rel=1e-12)


def test_load_manifest_is_reexported(data):
    root, _ = data
    assert load_manifest(root)["tokenizer"]["vocab_size"] == VOCAB
