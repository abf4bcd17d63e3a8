"""Datasets for joint classification and captioning, all with the same columns.

Shared columns (`SHARED_COLUMNS`): ``image`` (`datasets.Image`, decoded lazily), ``label`` (`ClassLabel` with readable
names), ``captions`` (list of strings, possibly empty) and ``image_id`` (stable string). Each dataset's extra columns
are listed in its registry entry: CUB adds ``bbox`` and ``parts``; the synthetic dataset adds ``part_mask`` and
``discriminative_parts`` (and ``distractor_parts`` with distractors).

* `DATASETS`: the registry, name -> `DatasetSpec` (title, loader, protocols, extra columns); see
  `cam_joint.data.registry` for how to add a dataset.
* `load_dataset_by_name(name, data_dir, protocol, **kwargs)` (also `load_image_text_dataset`): a registered name
  ("cub", "flowers", "synthetic") through its loader; any other name is a Hugging Face Hub dataset id (or a
  packaged builder such as "imagefolder") handed to `datasets.load_dataset`, whose columns are then renamed to the
  shared ones (`normalize_hub_columns`).
* `load_cub`, `load_flowers`: from the datasets' original folder layouts (never downloaded here).
* Split protocols ``official`` and ``etri2020``: `cam_joint.data.splits`.
* Bad input raises `DatasetLayoutError` (a ValueError naming file and line); ``skip_bad=True`` skips and reports.
  Loaders check that every image file exists and starts like a JPEG/PNG; ``verify_images=True`` also decodes each
  once. An image that is damaged past its header and not verified fails when decoded: `datasets`' lazy decoding
  then raises PIL's message without the file name, `decode_image` (on a column cast to ``Image(decode=False)``)
  raises one naming the file and ``image_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cam_joint.data.layout_errors import DatasetLayoutError, SkipReport
from cam_joint.data.registry import (
    DATASETS,
    DatasetSpec,
    find_dataset,
    load_dataset_by_name,
    register_dataset,
    registered_protocols,
)

if TYPE_CHECKING:
    from cam_joint.data.cub import load_cub
    from cam_joint.data.flowers import load_flowers
    from cam_joint.data.hub_datasets import HUB_COLUMN_ALIASES, normalize_hub_columns
    from cam_joint.data.layout_files import decode_image

__all__ = [
    "DATASETS",
    "SHARED_COLUMNS",
    "DatasetLayoutError",
    "DatasetSpec",
    "SkipReport",
    "decode_image",
    "find_dataset",
    "load_cub",
    "load_dataset_by_name",
    "load_flowers",
    "load_image_text_dataset",
    "normalize_hub_columns",
    "register_dataset",
    "registered_protocols",
]

SHARED_COLUMNS = ("image", "label", "captions", "image_id")

# The name every caller used before the registry; the same function.
load_image_text_dataset = load_dataset_by_name

# The loaders import `datasets` and scipy; importing them on first use keeps `import cam_joint.data` (and
# `cam-joint --help`) light.
_LAZY = {
    "load_cub": "cam_joint.data.cub",
    "load_flowers": "cam_joint.data.flowers",
    "decode_image": "cam_joint.data.layout_files",
    "normalize_hub_columns": "cam_joint.data.hub_datasets",
    "HUB_COLUMN_ALIASES": "cam_joint.data.hub_datasets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
