"""Writers of small dataset folders in the datasets' original layouts, for the data tests.

These do not read ../shared: they make complete, self-consistent little copies of CUB and Flowers, so the bad-input
and command-line tests run everywhere. (The full-size layouts built from the real metadata live in the test files.)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def tiny_jpeg(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


TINY_JPEG = tiny_jpeg()

SMALL_CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
SMALL_CUB_IMAGES_PER_CLASS = 4


def small_cub_captions(image_number: int) -> list[str]:
    # Punctuation and capitals as in Reed's original files: the loader must keep them.
    return [f"This bird, number {image_number}, has caption {k}." for k in range(1, 11)]


def write_small_cub(parent: Path, *, text_location: str | None = "inside", newline: str = "\n") -> Path:
    """``parent/CUB_200_2011`` with 3 classes x 4 images; captions in text_c10 "inside" it, "beside" it, or none.

    Image k (1-based) is in class (k - 1) // 4 + 1, is a training image when k is odd, has the bounding box
    (k, k + 1, 10k, 20k) and part p at (k + p, p, p % 2).
    """
    root = parent / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    images, labels, split, boxes, parts = [], [], [], [], []
    for class_index, class_name in enumerate(SMALL_CUB_CLASSES, start=1):
        (root / "images" / class_name).mkdir(parents=True)
        for j in range(SMALL_CUB_IMAGES_PER_CLASS):
            k = len(images) + 1
            relative = f"{class_name}/{class_name.split('.', 1)[1]}_{k:04d}.jpg"
            (root / "images" / relative).write_bytes(TINY_JPEG)
            images.append(f"{k} {relative}")
            labels.append(f"{k} {class_index}")
            split.append(f"{k} {k % 2}")
            boxes.append(f"{k} {k}.0 {k + 1}.0 {10 * k}.0 {20 * k}.0")
            parts.extend(f"{k} {p} {k + p}.0 {p}.0 {p % 2}" for p in range(1, 16))
            if text_location is not None:
                text_root = root / "text_c10" if text_location == "inside" else parent / "text_c10"
                caption_path = text_root / Path(relative).with_suffix(".txt")
                caption_path.parent.mkdir(parents=True, exist_ok=True)
                caption_path.write_bytes((newline.join(small_cub_captions(k)) + newline).encode())
    tables = {
        "classes.txt": [f"{i} {name}" for i, name in enumerate(SMALL_CUB_CLASSES, start=1)],
        "images.txt": images,
        "image_class_labels.txt": labels,
        "train_test_split.txt": split,
        "bounding_boxes.txt": boxes,
        "parts/part_locs.txt": parts,
    }
    for name, lines in tables.items():
        (root / name).write_bytes((newline.join(lines) + newline).encode())
    return root


SMALL_FLOWERS_LABELS = (1, 1, 1, 2, 2, 2, 3, 3, 3, 102, 102, 102)  # image k has label SMALL_FLOWERS_LABELS[k - 1]
SMALL_FLOWERS_SETID = {"trnid": [1, 4, 7, 10], "valid": [2, 5, 8, 11], "tstid": [3, 6, 9, 12]}


def write_small_flowers(
    folder: Path,
    *,
    labels: tuple[int, ...] = SMALL_FLOWERS_LABELS,
    setid: dict[str, list[int]] | None = None,
    with_captions: bool = False,
) -> Path:
    """A Flowers 102 folder (jpg/, imagelabels.mat, setid.mat, optionally text_c10/) with the given labels."""
    setid = SMALL_FLOWERS_SETID if setid is None else setid
    (folder / "jpg").mkdir(parents=True)
    # Same array shapes and dtypes as the real files: 1 x N uint8 labels, 1 x N uint16 ids.
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(folder / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in setid.items()})
    for number, label in enumerate(labels, start=1):
        (folder / "jpg" / f"image_{number:05d}.jpg").write_bytes(TINY_JPEG)
        if with_captions:
            caption_path = folder / "text_c10" / f"class_{label:05d}" / f"image_{number:05d}.txt"
            caption_path.parent.mkdir(parents=True, exist_ok=True)
            caption_path.write_text("".join(f"this flower {number} has petals, caption {k}\n" for k in range(10)))
    return folder
