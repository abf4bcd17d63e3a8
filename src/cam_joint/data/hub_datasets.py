"""Hugging Face Hub datasets (and packaged builders such as "imagefolder") with the shared columns.

Any dataset name the registry does not know goes here: `datasets.load_dataset` loads it, and `normalize_hub_columns`
renames and converts its columns to ``image``, ``label``, ``captions`` and ``image_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import datasets

# Names Hub datasets commonly use for our columns; an explicit `column_mapping` takes precedence.
HUB_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("img", "jpg", "png"),
    "label": ("labels", "fine_label", "class", "category"),
    "captions": ("caption", "text", "texts", "sentences", "descriptions"),
    "image_id": ("id", "file_name", "filename"),
}


def load_hub_dataset(name: str, data_dir: str | Path | None = None, **kwargs: Any) -> "datasets.DatasetDict":
    """`datasets.load_dataset(name, data_dir=..., **kwargs)` as a DatasetDict with the shared columns; a
    ``column_mapping`` in ``kwargs`` goes to `normalize_hub_columns`."""
    import datasets

    column_mapping = kwargs.pop("column_mapping", None)
    loaded = datasets.load_dataset(name, data_dir=None if data_dir is None else str(data_dir), **kwargs)
    if isinstance(loaded, datasets.Dataset):  # a `split=` argument returns one split
        loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
    return normalize_hub_columns(loaded, column_mapping)


def normalize_hub_columns(
    dataset_dict: "datasets.DatasetDict", column_mapping: Mapping[str, str] | None = None
) -> "datasets.DatasetDict":
    """Rename and convert a Hub dataset's columns to the shared ones (see `cam_joint.data`).

    ``column_mapping`` maps the dataset's column names to ours, e.g. ``{"img": "image", "fine_label": "label"}``;
    without it, `HUB_COLUMN_ALIASES` are tried. A missing ``captions`` column becomes empty lists, a single caption
    string a one-element list, a missing ``image_id`` "<split>/<row number>"; string labels become a `ClassLabel`
    whose names are the sorted labels of all splits.
    """
    import datasets

    columns = set(next(iter(dataset_dict.values())).column_names) if dataset_dict else set()
    renames = dict(column_mapping or {})
    for ours, aliases in HUB_COLUMN_ALIASES.items():
        if ours not in columns and ours not in renames.values():
            for alias in aliases:
                if alias in columns and alias not in renames:
                    renames[alias] = ours
                    break
    dataset_dict = dataset_dict.rename_columns({old: new for old, new in renames.items() if old in columns})
    features = next(iter(dataset_dict.values())).features
    for required in ("image", "label"):
        if required not in features:
            raise ValueError(
                f"no {required!r} column among {sorted(features)}; pass column_mapping={{'<their name>': '{required}'}}"
            )

    label_feature = features["label"]
    if not isinstance(label_feature, datasets.ClassLabel):
        values = sorted({value for split in dataset_dict.values() for value in split["label"]})
        names = [str(value) for value in values]
        if isinstance(label_feature, datasets.Value) and label_feature.dtype.startswith("int"):
            names = [str(i) for i in range(max(values) + 1)] if values else []
        dataset_dict = dataset_dict.cast_column("label", datasets.ClassLabel(names=names))

    result = {}
    for split, dataset in dataset_dict.items():
        if "captions" not in dataset.column_names:
            dataset = dataset.add_column("captions", [[] for _ in range(len(dataset))])
        elif isinstance(dataset.features["captions"], datasets.Value):
            dataset = dataset.map(lambda row: {"captions": [row["captions"]]}, desc="captions as lists")
        if "image_id" not in dataset.column_names:
            dataset = dataset.add_column("image_id", [f"{split}/{i:06d}" for i in range(len(dataset))])
        dataset = dataset.cast_column("captions", datasets.Sequence(datasets.Value("string")))
        result[split] = dataset.cast_column("image_id", datasets.Value("string"))
    return datasets.DatasetDict(result)
