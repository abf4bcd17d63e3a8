"""Disk cache of a frozen encoder's feature maps: encode a dataset split once, train the heads on it many times.

With a frozen encoder the encoder forward pass is the whole cost of an epoch on a CPU, and it always returns the same
maps, so they are computed once, stored as float16 and memory-mapped back. Nothing here knows about the model class:
the caller supplies ``encode_fn`` (preprocessing + ``forward_features`` under ``no_grad``) and a JSON-able ``key``
describing everything the features depend on (see ``feature_key``). The key is hashed into the file name, so a
different encoder, different weights, different preprocessing or a different dataset gives a different file: a stale
cache can only be returned if the key fails to describe a change, never because a file was reused.

On disk, per entry: ``<name>.f16`` (raw row-major float16 data, written through a memory map so a large split never
has to fit in memory) and ``<name>.json`` (the key, shape and dtype, for humans and as a check). The JSON is renamed
into place last and is the commit point: a run killed at any moment leaves either no entry or a complete one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

# 2: images are turned upright by their EXIF orientation before encoding (`exif_upright`); features cached by
# version 1 encoded a phone photo as stored (sideways), so they are not reused.
FORMAT_VERSION = 2
_DTYPE = torch.float16
_NP_DTYPE = np.float16


def fingerprint_state_dict(module_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every parameter and buffer: name, shape, dtype and raw bytes (hex digest).

    Hashes the real values, not ids or timestamps, so two independently created models with equal weights share a
    fingerprint and any changed value changes it. About 0.1 s for resnet18-sized weights.
    """
    state = module_or_state_dict.state_dict() if isinstance(module_or_state_dict, torch.nn.Module) else module_or_state_dict
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):  # e.g. extra state: hash its repr
            digest.update(f"{name}|{value!r}".encode())
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        # Viewing as bytes works for every dtype (bfloat16 has no numpy equivalent).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset: Any) -> str | None:
    """A ``datasets.Dataset``'s content fingerprint (changes with every transform applied to it), else None."""
    return getattr(dataset, "_fingerprint", None)


def feature_key(
    encoder_name: str,
    weights: str | torch.nn.Module | Mapping[str, torch.Tensor],
    preprocessing: Mapping[str, Any],
    dataset: Any = None,
    split: str | None = None,
    num_rows: int | None = None,
    **extra: Any,
) -> dict:
    """The key dict for ``FeatureCache``: everything the cached features depend on.

    ``weights`` is a fingerprint string or a module / state dict (fingerprinted here). ``preprocessing`` is the
    image pipeline config (input size, resize, crop, mean/std, interpolation, ...). ``dataset`` contributes its
    fingerprint and (when ``num_rows`` is None) its length. Anything else that changes the features (e.g. which
    layer is read) goes in ``extra``.
    """
    fingerprint = weights if isinstance(weights, str) else fingerprint_state_dict(weights)
    if dataset is not None and num_rows is None:
        num_rows = len(dataset)
    key = {
        "format_version": FORMAT_VERSION,
        "dtype": str(_DTYPE).replace("torch.", ""),
        "encoder_name": encoder_name,
        "weights_fingerprint": fingerprint,
        "preprocessing": dict(preprocessing),
        "dataset_fingerprint": dataset_fingerprint(dataset) if dataset is not None else None,
        "split": split,
        "num_rows": num_rows,
        **extra,
    }
    # Round-trip through JSON so tuples/lists and other JSON-equivalent spellings make the same key.
    return json.loads(_canonical_json(key))


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(key).encode()).hexdigest()[:32]


class _BatchView(torch.utils.data.Dataset):
    """Batch i of a dataset: ``dataset[start:stop]`` (a column dict for a ``datasets.Dataset``) or a list of items.

    Module-level (picklable) so DataLoader workers also work with the "spawn" start method.
    """

    def __init__(self, dataset: Any, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.sliceable = hasattr(dataset, "column_names")  # datasets.Dataset: slicing decodes a whole batch at once

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __getitem__(self, i: int):
        start, stop = i * self.batch_size, min(len(self.dataset), (i + 1) * self.batch_size)
        return self.dataset[start:stop] if self.sliceable else [self.dataset[j] for j in range(start, stop)]


def _as_is(batch: Any) -> Any:
    return batch


def _batches(dataset: Any, batch_size: int, num_workers: int):
    """Batches in order; with workers, whole batches are fetched/decoded in parallel, the encoder stays here."""
    view = _BatchView(dataset, batch_size)
    if num_workers <= 0:
        return (view[i] for i in range(len(view)))
    return iter(torch.utils.data.DataLoader(view, batch_size=None, num_workers=num_workers, collate_fn=_as_is))


class FeatureCache:
    """Feature maps of a dataset split, keyed by everything they depend on. See the module docstring."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)

    # ------------------------------------------------------------------ paths
    def _stem(self, key: Mapping[str, Any]) -> str:
        # A readable prefix for humans; the hash alone decides identity.
        label = "-".join(str(key[k]) for k in ("encoder_name", "split") if key.get(k) is not None) or "features"
        label = re.sub(r"[^A-Za-z0-9_.]+", "_", label)[:60]
        return f"{label}-{key_hash(key)}"

    def data_path(self, key: Mapping[str, Any]) -> Path:
        return self.cache_dir / f"{self._stem(key)}.f16"

    def meta_path(self, key: Mapping[str, Any]) -> Path:
        return self.cache_dir / f"{self._stem(key)}.json"

    # ------------------------------------------------------------------ read
    def load(self, key: Mapping[str, Any]) -> torch.Tensor | None:
        """The cached ``(N, C, h, w)`` float16 tensor (memory-mapped, copy-on-write), or None if absent/invalid."""
        key = json.loads(_canonical_json(key))
        meta_path, data_path = self.meta_path(key), self.data_path(key)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        shape = tuple(meta.get("shape", ()))
        if meta.get("key") != key or not shape:  # hash collision or foreign file: never return it
            return None
        numel = math.prod(shape)
        if not data_path.is_file() or data_path.stat().st_size != numel * 2:
            return None
        if numel == 0:
            return torch.empty(shape, dtype=_DTYPE)
        # shared=False maps the file privately: pages load lazily and writes to the tensor never reach the file.
        return torch.from_file(str(data_path), shared=False, size=numel, dtype=_DTYPE).view(shape)

    def __contains__(self, key: Mapping[str, Any]) -> bool:
        return self.load(key) is not None

    # ------------------------------------------------------------------ write
    def get_or_compute(
        self,
        key: Mapping[str, Any],
        dataset_split: Sequence | Any,
        encode_fn: Callable[[Any], torch.Tensor],
        batch_size: int = 64,
        num_workers: int = 0,
        desc: str | None = None,
    ) -> torch.Tensor:
        """Load the features for ``key``, or compute them with ``encode_fn`` over ``dataset_split`` and store them.

        ``encode_fn(batch) -> Tensor(B, C, h, w)`` gets ``dataset_split[start:stop]`` for a ``datasets.Dataset``
        (a dict of columns, as in ``Dataset.map(batched=True)``) or a list of items for any other sequence, in order.
        Returns an ``(N, C, h, w)`` float16 tensor; call ``.float()`` on batches of it before use.
        """
        key = json.loads(_canonical_json(key))
        cached = self.load(key)
        if cached is not None:
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        n = len(dataset_split)
        if key.get("num_rows") not in (None, n):
            raise ValueError(f"key says num_rows={key['num_rows']} but the dataset has {n} rows")

        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: concurrent writers never share a temp file
        data_path, meta_path = self.data_path(key), self.meta_path(key)
        tmp_data, tmp_meta = data_path.with_name(data_path.name + tag), meta_path.with_name(meta_path.name + tag)
        out: np.memmap | None = None
        shape: tuple[int, ...] | None = None
        try:
            progress = _progress(n, desc)
            row = 0
            for batch in _batches(dataset_split, batch_size, num_workers):
                feats = encode_fn(batch)
                if not isinstance(feats, torch.Tensor) or feats.dim() < 2:
                    raise TypeError("encode_fn must return a tensor of shape (B, C, ...)")
                expected = min(batch_size, n - row)
                if len(feats) != expected:  # rows must stay aligned with the dataset's rows
                    raise ValueError(f"encode_fn returned {len(feats)} rows for a batch of {expected}")
                feats = feats.detach().to("cpu", _DTYPE)
                if not torch.isfinite(feats).all():
                    raise ValueError("encoder features overflow float16 (or are NaN); they cannot be cached as float16")
                if out is None:
                    shape = (n, *feats.shape[1:])
                    out = np.memmap(tmp_data, dtype=_NP_DTYPE, mode="w+", shape=shape)
                elif tuple(feats.shape[1:]) != shape[1:]:
                    raise ValueError(f"encode_fn returned {tuple(feats.shape)} after batches of {shape[1:]}")
                out[row:row + len(feats)] = feats.numpy()
                row += len(feats)
                progress.update(len(feats))
            progress.close()
            if out is None:
                raise ValueError("cannot cache features of an empty dataset")
            out.flush()
            del out
            out = None
            _fsync(tmp_data)
            meta = {"key": key, "shape": list(shape), "dtype": "float16", "layout": "raw row-major (C order)"}
            tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            _fsync(tmp_meta)
            # Data first, JSON last: the JSON's presence is what makes the entry valid.
            os.replace(tmp_data, data_path)
            os.replace(tmp_meta, meta_path)
        finally:
            if out is not None:
                del out
            for tmp in (tmp_data, tmp_meta):
                tmp.unlink(missing_ok=True)
        loaded = self.load(key)
        assert loaded is not None, "feature cache entry vanished right after writing it"
        return loaded


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str | None):
    if desc is None:
        return _NoProgress()
    from cam_joint.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="img")


__all__ = ["FeatureCache", "fingerprint_state_dict", "feature_key", "dataset_fingerprint", "key_hash"]
