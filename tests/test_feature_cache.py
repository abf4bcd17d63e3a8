"""Feature cache: reuse when nothing changed, recompute when anything did, never a partial or stale entry."""

import json

import numpy as np
import pytest
import torch

from cam_joint.data.feature_cache import FeatureCache, feature_key, fingerprint_state_dict


class TinyEncoder(torch.nn.Module):
    """Stands in for a timm CNN: (B, 3, H, W) -> (B, C, h, w), with a BatchNorm buffer to fingerprint."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Counting:
    """encode_fn wrapper that counts calls, so a test can tell loading from recomputing."""

    def __init__(self, encoder, preprocess_scale=1.0, fail_at_batch=None):
        self.encoder, self.scale, self.fail_at = encoder.eval(), preprocess_scale, fail_at_batch
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash in the middle of encoding")
        with torch.no_grad():
            return self.encoder(torch.stack(batch) * self.scale)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 16, 16, generator=g) for _ in range(10)]


def make_key(encoder, name="tiny", preprocessing=None, split="train", n=10, **extra):
    return feature_key(name, encoder, preprocessing or {"input_size": [3, 16, 16], "scale": 1.0},
                       split=split, num_rows=n, dataset_fingerprint=extra.pop("dataset_fp", "abc"), **extra)


def cache_files(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_same_key_is_loaded_not_recomputed(tmp_path, images):
    enc = TinyEncoder()
    first = Counting(enc)
    feats = FeatureCache(tmp_path).get_or_compute(make_key(enc), images, first, batch_size=4)
    assert first.calls == 3  # ceil(10 / 4)
    # A fresh cache object (as in a new training run) with an equal-but-new encoder must hit the cache.
    again = Counting(TinyEncoder())
    loaded = FeatureCache(tmp_path).get_or_compute(make_key(TinyEncoder()), images, again, batch_size=4)
    assert again.calls == 0
    assert torch.equal(loaded, feats)
    assert [n.rsplit(".", 1)[1] for n in cache_files(tmp_path)] == ["f16", "json"]


@pytest.mark.parametrize("change", ["weights", "buffer", "preprocessing", "encoder_name", "dataset", "split"])
def test_any_change_in_what_features_depend_on_recomputes(tmp_path, images, change):
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path)
    original = cache.get_or_compute(make_key(enc), images, Counting(enc)).clone()

    enc2, key_kwargs, scale = TinyEncoder(), {}, 1.0
    if change == "weights":
        with torch.no_grad():
            enc2.conv.weight[0, 0, 0, 0] += 0.5
    elif change == "buffer":
        enc2.bn.running_mean += 0.5
    elif change == "preprocessing":
        key_kwargs["preprocessing"], scale = {"input_size": [3, 16, 16], "scale": 0.5}, 0.5
    elif change == "encoder_name":
        key_kwargs["name"] = "tiny_v2"
    elif change == "dataset":
        key_kwargs["dataset_fp"] = "def"
    elif change == "split":
        key_kwargs["split"] = "test"
    counting = Counting(enc2, preprocess_scale=scale)
    new = cache.get_or_compute(make_key(enc2, **key_kwargs), images, counting)
    assert counting.calls > 0, f"changing the {change} must not return the cached features"
    if change in ("weights", "buffer", "preprocessing"):
        assert not torch.allclose(new.float(), original.float())  # the stale features really would have been wrong
    assert len(cache_files(tmp_path)) == 4  # both entries kept side by side


def test_values_round_trip_as_float16(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(4, 3, 5, generator=g) * 10 for _ in range(7)]
    key = {"encoder_name": "identity", "split": "x", "num_rows": 7}
    out = FeatureCache(tmp_path).get_or_compute(key, data, lambda batch: torch.stack(batch), batch_size=3)
    assert out.dtype == torch.float16 and out.shape == (7, 4, 3, 5)
    expected = torch.stack(data)
    torch.testing.assert_close(out.float(), expected, rtol=1e-3, atol=1e-2)
    # Editing the returned (memory-mapped) tensor must not corrupt the cache.
    out.zero_()
    reloaded = FeatureCache(tmp_path).load(key)
    torch.testing.assert_close(reloaded.float(), expected, rtol=1e-3, atol=1e-2)


def test_crash_midway_leaves_no_entry_and_next_run_recovers(tmp_path, images):
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache.get_or_compute(make_key(enc), images, Counting(enc, fail_at_batch=2), batch_size=4)
    assert cache_files(tmp_path) == []  # no partial data, no temp files
    counting = Counting(enc)
    cache.get_or_compute(make_key(enc), images, counting, batch_size=4)
    assert counting.calls == 3


def test_incomplete_or_foreign_entries_are_never_returned(tmp_path, images):
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path)
    key = make_key(enc)
    cache.get_or_compute(key, images, Counting(enc))
    data, meta = cache.data_path(key), cache.meta_path(key)

    # A data file cut short (e.g. a disk filling up) is detected by its size.
    data.write_bytes(data.read_bytes()[:-2])
    assert cache.load(key) is None
    counting = Counting(enc)
    cache.get_or_compute(key, images, counting)
    assert counting.calls > 0

    # A sidecar that describes a different key (hash collision, hand-copied file) is rejected.
    info = json.loads(meta.read_text())
    info["key"]["encoder_name"] = "something_else"
    meta.write_text(json.dumps(info))
    assert cache.load(key) is None

    # Data without its JSON commit marker (a run killed between the two renames) is not an entry.
    meta.unlink()
    assert cache.load(key) is None


def test_fingerprint_tracks_values_not_identity():
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=0)
    assert fingerprint_state_dict(a) == fingerprint_state_dict(b) == fingerprint_state_dict(a.state_dict())
    assert fingerprint_state_dict(TinyEncoder(seed=1)) != fingerprint_state_dict(a)
    assert fingerprint_state_dict(a.half()) != fingerprint_state_dict(b)  # same numbers, different dtype
    bf16 = TinyEncoder().to(torch.bfloat16)  # no numpy dtype: must still hash
    assert len(fingerprint_state_dict(bf16)) == 64


def test_hf_dataset_batches_in_order_with_workers(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"x": [[float(i)] * 4 for i in range(9)]})
    seen = []

    def encode(batch):  # gets the column dict of `ds[start:stop]`, like Dataset.map(batched=True)
        seen.append(type(batch).__name__)
        return torch.tensor(batch["x"]).view(-1, 1, 2, 2)

    key = feature_key("rows", "w0", {}, dataset=ds, split="train")
    assert key["dataset_fingerprint"] == ds._fingerprint and key["num_rows"] == 9
    out = FeatureCache(tmp_path).get_or_compute(key, ds, encode, batch_size=2, num_workers=2)
    assert out[:, 0, 0, 0].tolist() == list(range(9))  # row i holds row i's features
    assert set(seen) == {"dict"}


def test_row_count_mismatch_is_an_error(tmp_path, images):
    enc = TinyEncoder()
    with pytest.raises(ValueError, match="num_rows"):
        FeatureCache(tmp_path).get_or_compute(make_key(enc, n=11), images, Counting(enc))
    with pytest.raises(ValueError, match="rows"):
        FeatureCache(tmp_path).get_or_compute(make_key(enc), images, lambda b: torch.zeros(1, 2, 2, 2))
    assert cache_files(tmp_path) == []


def test_float16_overflow_is_refused(tmp_path):
    key = {"encoder_name": "huge", "num_rows": 2}
    with pytest.raises(ValueError, match="float16"):
        FeatureCache(tmp_path).get_or_compute(key, [0, 1], lambda b: torch.full((len(b), 1, 1, 1), 1e6))
    assert np.all([not n.endswith(".json") for n in cache_files(tmp_path)])
