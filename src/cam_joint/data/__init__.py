"""Datasets for joint classification and captioning, all with the same columns.

Shared columns (`SHARED_COLUMNS`): ``image`` (`datasets.Image`, decoded lazily), ``label`` (`ClassLabel` with readable
names), ``captions`` (list of strings, possibly empty) and ``image_id`` (stable string). CUB adds ``bbox`` and
``parts``; the synthetic dataset adds ``part_mask`` and ``discriminative_parts``.

* `load_cub`, `load_flowers`: from the datasets' original folder layouts (never downloaded here).
* `load_image_text_dataset(name, ...)`: "cub", "flowers", "synthetic", or any other name = a Hugging Face Hub
  dataset id (or a packaged builder such as "imagefolder") handed to `datasets.load_dataset`, whose columns are then
  renamed to the shared ones.
* Split protocols ``official`` and ``etri2020``: `cam_joint.data.splits`.
* Bad input raises `DatasetLayoutError` (a ValueError naming file and line); ``skip_bad=True`` skips and reports.
  Loaders check that every image file exists and starts like a JPEG/PNG; ``verify_images=True`` also decodes each
  once. An image that is damaged past its header and not verified fails when decoded: `datasets`' lazy decoding
  then raises PIL's message without the file name, `decode_image` (on a column cast to ``Image(decode=False)``)
  raises one naming the file and ``image_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cam_joint.data.layout_errors import DatasetLayoutError, SkipReport

if TYPE_CHECKING:
    import datasets

    from cam_joint.data.cub import load_cub
    from cam_joint.data.flowers import load_flowers
    from cam_joint.data.layout_files import decode_image

__all__ = [
    "SHARED_COLUMNS",
    "DatasetLayoutError",
    "SkipReport",
    "decode_image",
    "load_cub",
    "load_flowers",
    "load_image_text_dataset",
    "normalize_hub_columns",
]

SHARED_COLUMNS = ("image", "label", "captions", "image_id")

# Names Hub datasets commonly use for our columns; an explicit `column_mapping` takes precedence.
HUB_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("img", "jpg", "png"),
    "label": ("labels", "fine_label", "class", "category"),
    "captions": ("caption", "text", "texts", "sentences", "descriptions"),
    "image_id": ("id", "file_name", "filename"),
}


def __getattr__(name: str) -> Any:
    # The loaders import `datasets` and scipy; importing them lazily keeps `import cam_joint.data.synthetic` (and
    # `cam-joint --help`) light.
    if name == "load_cub":
        from cam_joint.data.cub import load_cub

        return load_cub
    if name == "load_flowers":
        from cam_joint.data.flowers import load_flowers

        return load_flowers
    if name == "decode_image":
        from cam_joint.data.layout_files import decode_image

        return decode_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_image_text_dataset(
    name: str, data_dir: str | Path | None = None, protocol: str = "official", **kwargs: Any
) -> "datasets.DatasetDict":
    """Load a dataset by name; ``kwargs`` go to the loader (`load_cub`, `load_flowers`, `make_synthetic_dataset`,
    or `datasets.load_dataset`, minus ``column_mapping`` which `normalize_hub_columns` takes)."""
    if name in ("cub", "flowers"):
        if data_dir is None:
            raise ValueError(f"{name}: data_dir is required (the dataset's original folder; nothing is downloaded)")
        if name == "cub":
            from cam_joint.data.cub import load_cub as load
        else:
            from cam_joint.data.flowers import load_flowers as load
        return load(data_dir, protocol, **kwargs)
    if name == "synthetic":
        if protocol != "official":
            raise ValueError(f"synthetic: protocol {protocol!r} does not apply (the dataset has its own splits)")
        from cam_joint.data.synthetic import make_synthetic_dataset

        return make_synthetic_dataset(**kwargs)
    if protocol != "official":
        raise ValueError(f"{name}: protocol {protocol!r} is defined for cub and flowers only; use 'official'")
    import datasets

    column_mapping = kwargs.pop("column_mapping", None)
    loaded = datasets.load_dataset(name, data_dir=None if data_dir is None else str(data_dir), **kwargs)
    if isinstance(loaded, datasets.Dataset):  # a `split=` argument returns one split
        loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
    return normalize_hub_columns(loaded, column_mapping)


def normalize_hub_columns(
    dataset_dict: "datasets.DatasetDict", column_mapping: Mapping[str, str] | None = None
) -> "datasets.DatasetDict":
    """Rename and convert a Hub dataset's columns to the shared ones (see the module docstring).

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
