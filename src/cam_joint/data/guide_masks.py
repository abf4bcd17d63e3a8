"""The mask oracle's ground truth (`--cam-mask-guidance`): each image's deciding-parts mask at the model's input.

A dataset carries it in two columns: ``part_mask`` (a part index per pixel, `cam_joint.data.synthetic.PART_INDEX`,
0 = background) and ``discriminative_parts`` (the names of the parts that decide the class). The synthetic birds
have both; training refuses the oracle on a dataset without them (`check_guide_mask_columns`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cam_joint.data.synthetic import PART_INDEX

GUIDE_MASK_COLUMNS = ("part_mask", "discriminative_parts")


def check_guide_mask_columns(split, dataset_name: str) -> None:
    """Raise a ValueError naming the dataset and the missing column when `split` has no deciding-parts masks."""
    missing = [c for c in GUIDE_MASK_COLUMNS if c not in split.column_names]
    if missing:
        raise ValueError(f"--cam-mask-guidance needs the deciding parts' ground-truth masks; dataset "
                         f"{dataset_name!r} has no {' and no '.join(repr(c) for c in missing)} column (the "
                         f"synthetic birds have them)")


def deciding_parts_mask(image_processor, part_mask, part_names) -> torch.Tensor:
    """The deciding parts' mask (H, W) in [0, 1] at the model's input size: `part_mask` restricted to `part_names`,
    resized (bilinear) and center-cropped as timm's evaluation transform does the image."""
    if image_processor.crop_mode not in ("center", "squash"):
        raise ValueError(f"the mask guide follows center / squash crops only, not crop_mode="
                         f"{image_processor.crop_mode!r}")
    selected = np.isin(np.asarray(part_mask), [PART_INDEX[name] for name in part_names]).astype(np.float32)
    image = Image.fromarray(selected)  # float32: mode "F"
    width, height = image_processor.resized_size(image.width, image.height)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    crop_height, crop_width = image_processor.input_size[-2:]
    # torchvision's CenterCrop offsets (what timm's transform uses)
    left, top = int(round((width - crop_width) / 2.0)), int(round((height - crop_height) / 2.0))
    return torch.from_numpy(np.asarray(image.crop((left, top, left + crop_width, top + crop_height))).copy())


__all__ = ["GUIDE_MASK_COLUMNS", "check_guide_mask_columns", "deciding_parts_mask"]
