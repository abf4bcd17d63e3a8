"""CUB-200-2011 (Caltech-UCSD Birds) from its original folder layout, with Reed et al.'s captions.

Where things are looked for:

* ``data_dir`` is either the ``CUB_200_2011`` folder itself (the one holding ``images.txt``) or its parent.
* In that folder: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``, ``bounding_boxes.txt``,
  ``parts/part_locs.txt``, ``images/<class>/<name>.jpg``, and, for the official protocol, ``train_test_split.txt``.
* Captions (``text_c10/<class>/<name>.txt``, ten lines each): the ``text_dir`` argument if given, else
  ``CUB_200_2011/text_c10`` (inside), else ``text_c10`` beside the ``CUB_200_2011`` folder. Reed's archive unpacks
  beside it, which is why both are accepted; inside wins when both exist. Without any ``text_c10`` folder the
  ``captions`` column is empty (classification still works) and a warning says so; with the folder present, every
  image must have its caption file.

Rows follow ``images.txt`` order inside each split. Columns: see `cam_joint.data.layout_files`; ``label`` names are
the class folder names without their number ("001.Black_footed_Albatross" -> "Black_footed_Albatross").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import datasets
import numpy as np

from cam_joint.data.layout_errors import BadItemPolicy, DatasetLayoutError, SkipReport
from cam_joint.data.layout_files import (
    CAPTIONS_PER_IMAGE,
    ImageRecord,
    NumberTable,
    build_dataset_dict,
    image_file_problem,
    image_text_features,
    is_whole,
    read_caption_file,
    read_number_table,
    read_table,
    reject_lines,
)
from cam_joint.data.splits import (
    CUB_ETRI2020_CAPTION_VALIDATION_CLASSES,
    CUB_STACKGAN_TEST_CLASSES,
    PROTOCOLS,
    etri2020_split_indices,
    official_split_indices,
)

logger = logging.getLogger(__name__)

CUB_FOLDER_NAME = "CUB_200_2011"
NUM_PARTS = 15  # back, beak, belly, breast, crown, forehead, left eye/leg/wing, nape, right eye/leg/wing, tail, throat


def find_cub_root(data_dir: str | Path) -> Path:
    """The folder holding ``images.txt``: ``data_dir`` itself or ``data_dir/CUB_200_2011``."""
    data_dir = Path(data_dir).absolute()  # image paths are stored in the dataset: keep them valid from any cwd
    for candidate in (data_dir, data_dir / CUB_FOLDER_NAME):
        if (candidate / "images.txt").is_file():
            return candidate
    raise DatasetLayoutError(
        data_dir, f"no images.txt here or in {CUB_FOLDER_NAME}/ (expected the CUB_200_2011 folder or its parent)"
    )


def find_cub_text_dir(root: Path) -> Path | None:
    for candidate in (root / "text_c10", root.parent / "text_c10"):
        if candidate.is_dir():
            return candidate
    return None


def class_label_name(folder_name: str) -> str:
    """ "001.Black_footed_Albatross" -> "Black_footed_Albatross" (the readable part of a class folder name)."""
    number, dot, name = folder_name.partition(".")
    return name if dot and number.isdigit() and name else folder_name


def load_cub(
    data_dir: str | Path,
    protocol: str = "official",
    *,
    text_dir: str | Path | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    captions_per_image: int | None = CAPTIONS_PER_IMAGE,
    report: SkipReport | None = None,
) -> datasets.DatasetDict:
    """CUB-200-2011 as a `DatasetDict` with the splits of ``protocol`` (see `cam_joint.data.splits`).

    Bad items raise `DatasetLayoutError` naming file and line; with ``skip_bad`` they are left out and recorded in
    ``report`` (if you pass none, the report is logged as a warning). ``verify_images`` decodes every image once
    (slow) instead of only checking that each file exists and starts like an image.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")
    policy = BadItemPolicy.for_load(skip_bad, report)
    root = find_cub_root(data_dir)
    if text_dir is None:
        text_dir = find_cub_text_dir(root)
        if text_dir is None:
            logger.warning("no text_c10 folder in %s or beside it: CUB captions will be empty", root)
    class_keys, records = read_cub_records(
        root,
        text_dir=None if text_dir is None else Path(text_dir),
        policy=policy,
        with_official_split=protocol == "official",
        verify_images=verify_images,
        captions_per_image=captions_per_image,
    )
    if protocol == "official":
        split_indices = official_split_indices(records, ("train", "test"))
    else:
        split_indices = etri2020_split_indices(
            records,
            all_class_keys=class_keys,
            caption_test_classes=CUB_STACKGAN_TEST_CLASSES,
            caption_validation_classes=CUB_ETRI2020_CAPTION_VALIDATION_CLASSES,
            classes_file=root / "classes.txt",
        )
    features = image_text_features([class_label_name(key) for key in class_keys], with_bbox_and_parts=True,
                                   num_parts=NUM_PARTS)
    policy.log_if_owned(logger)
    return build_dataset_dict(records, split_indices, features)


# -------------------------------------------------------------------------------------------------- metadata files
def _read_name_table(path: Path, policy: BadItemPolicy) -> dict[int, tuple[int, str]]:
    """``id -> (line number, name)`` for the ``<id> <name>`` files (classes.txt, images.txt)."""
    table: dict[int, tuple[int, str]] = {}
    for table_line in read_table(path):
        fields = table_line.fields
        if len(fields) != 2 or not fields[0].isdigit():
            policy.reject("bad metadata line", path, f"expected '<id> <name>', found {' '.join(fields)!r}",
                          line=table_line.number)
        elif int(fields[0]) in table:
            policy.reject("bad metadata line", path, f"id {fields[0]} repeats line {table[int(fields[0])][0]}",
                          line=table_line.number)
        else:
            table[int(fields[0])] = (table_line.number, fields[1])
    return table


def _read_id_number_table(
    path: Path, n_values: int, policy: BadItemPolicy, *, whole: tuple[int, ...] = (), flags: tuple[int, ...] = ()
) -> NumberTable:
    """Lines ``<id> <value> ...``: ids are whole numbers; value columns in ``whole`` too; ``flags`` are 0 or 1.

    Column indices count the id as column 0. Rows are in file order; duplicate ids are left to the caller.
    """
    table = read_number_table(path, 1 + n_values, policy)
    for column in (0, *whole):
        table = reject_lines(table, ~is_whole(table.values[:, column]), path,
                             "expected a whole number in field " + str(column + 1), policy)
    for column in flags:
        bad = (table.values[:, column] != 0) & (table.values[:, column] != 1)
        table = reject_lines(table, bad, path, f"field {column + 1} must be 0 or 1", policy)
    return table


def _by_image_id(table: NumberTable, path: Path, policy: BadItemPolicy) -> dict[int, tuple[int, np.ndarray]]:
    """``image id -> (line number, values after the id)``; a repeated id is a bad line."""
    by_id: dict[int, tuple[int, np.ndarray]] = {}
    for line, row in zip(table.line_numbers.tolist(), table.values):
        image_number = int(row[0])
        if image_number in by_id:
            policy.reject("bad metadata line", path, f"image id {image_number} repeats line {by_id[image_number][0]}",
                          line=line)
        else:
            by_id[image_number] = (line, row[1:])
    return by_id


@dataclass(frozen=True)
class PartLocations:
    """Dense part locations for the images of images.txt, and which (image, part) pairs the file gave."""

    locations: np.ndarray  # (images, NUM_PARTS, 3) float32: x, y, visible
    given: np.ndarray  # (images, NUM_PARTS) bool


def _read_part_locations(path: Path, image_numbers: list[int], policy: BadItemPolicy) -> PartLocations:
    """part_locs.txt (``<image id> <part id> <x> <y> <visible>``, 15 lines per image), checked without a Python
    loop over its 176,820 lines unless something is wrong."""
    table = _read_id_number_table(path, 4, policy, whole=(1,), flags=(4,))
    bad_part = (table.values[:, 1] < 1) | (table.values[:, 1] > NUM_PARTS)
    table = reject_lines(table, bad_part, path, f"part id must be in 1..{NUM_PARTS}", policy)

    known = np.array(sorted(image_numbers), dtype=np.int64)
    ids = table.values[:, 0].astype(np.int64)
    position = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    is_known = (known[position] == ids) if len(known) else np.zeros(len(ids), dtype=bool)
    unknown_ids, first_row = np.unique(ids[~is_known], return_index=True)
    for image_number, line in zip(unknown_ids.tolist(), table.line_numbers[~is_known][first_row].tolist()):
        policy.reject("metadata for an unknown image", path, f"image id {image_number} is not in images.txt", line=line)
    table, position = table.select(is_known), position[is_known]

    slot = position * NUM_PARTS + table.values[:, 1].astype(np.int64) - 1
    _, first = np.unique(slot, return_index=True)
    repeated = np.ones(len(slot), dtype=bool)
    repeated[first] = False
    for line in table.line_numbers[repeated].tolist():
        policy.reject("bad metadata line", path, "this image's part is already given on an earlier line", line=line)
    slot, values = slot[first], table.values[first]

    # Rows of `known` (sorted ids) back to the order of `image_numbers` (images.txt order).
    row_of_id = {image_number: row for row, image_number in enumerate(known.tolist())}
    order = np.array([row_of_id[image_number] for image_number in image_numbers], dtype=np.int64)
    locations = np.zeros((len(known) * NUM_PARTS, 3), dtype=np.float32)
    given = np.zeros(len(known) * NUM_PARTS, dtype=bool)
    locations[slot] = values[:, 2:5]
    given[slot] = True
    return PartLocations(locations.reshape(-1, NUM_PARTS, 3)[order], given.reshape(-1, NUM_PARTS)[order])


def read_cub_records(
    root: Path,
    *,
    text_dir: Path | None,
    policy: BadItemPolicy,
    with_official_split: bool,
    verify_images: bool = False,
    captions_per_image: int | None = CAPTIONS_PER_IMAGE,
) -> tuple[list[str], list[ImageRecord]]:
    """Class folder names (index = label) and one record per usable image, in ``images.txt`` order."""
    classes_path = root / "classes.txt"
    classes = _read_name_table(classes_path, policy)
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        # Labels are class id - 1; a gap would shift every later class, so this is not skippable.
        raise DatasetLayoutError(classes_path, f"class ids must be 1..{len(class_ids)} without gaps")
    class_keys = [classes[class_id][1] for class_id in class_ids]

    images_path = root / "images.txt"
    images = _read_name_table(images_path, policy)
    labels_path = root / "image_class_labels.txt"
    labels = _by_image_id(_read_id_number_table(labels_path, 1, policy, whole=(1,)), labels_path, policy)
    boxes_path = root / "bounding_boxes.txt"
    boxes = _by_image_id(_read_id_number_table(boxes_path, 4, policy), boxes_path, policy)
    split_path = root / "train_test_split.txt"
    official = (
        _by_image_id(_read_id_number_table(split_path, 1, policy, flags=(1,)), split_path, policy)
        if with_official_split else {}
    )
    parts_path = root / "parts" / "part_locs.txt"
    image_numbers = list(images)
    parts = _read_part_locations(parts_path, image_numbers, policy)

    # Metadata about images that images.txt does not list is a sign of mismatched files: report it too.
    for path, table in ((labels_path, labels), (boxes_path, boxes), (split_path, official)):
        for image_number, (line, _) in table.items():
            if image_number not in images:
                policy.reject("metadata for an unknown image", path, f"image id {image_number} is not in images.txt",
                              line=line)

    image_root = root / "images"
    records: list[ImageRecord] = []
    for row, image_number in enumerate(image_numbers):
        line, relative_path = images[image_number]
        image_id = str(PurePosixPath(relative_path).with_suffix(""))

        def reject(kind: str, path: Path, problem: str, problem_line: int | None = None) -> None:
            policy.reject(kind, path, problem, line=problem_line, image_id=image_id)

        if image_number not in labels:
            reject("image without a label", images_path,
                   f"image id {image_number} has no line in image_class_labels.txt", line)
            continue
        label_line, (class_id,) = labels[image_number]
        class_id = int(class_id)
        if class_id not in classes:
            reject("label of an unknown class", labels_path, f"class id {class_id} is not in classes.txt", label_line)
            continue
        if image_number not in boxes:
            reject("image without a bounding box", images_path,
                   f"image id {image_number} has no line in bounding_boxes.txt", line)
            continue
        if not parts.given[row].all():
            missing_parts = (np.flatnonzero(~parts.given[row]) + 1).tolist()
            reject("image without part locations", images_path,
                   f"image id {image_number} has no line in parts/part_locs.txt for part(s) {missing_parts}", line)
            continue
        if with_official_split and image_number not in official:
            reject("image without a split", images_path,
                   f"image id {image_number} has no line in train_test_split.txt", line)
            continue

        image_path = image_root / relative_path
        problem = image_file_problem(image_path, verify=verify_images)
        if problem is not None:
            reject(problem.kind, image_path, problem.message)
            continue
        captions: tuple[str, ...] = ()
        if text_dir is not None:
            caption_path = text_dir / PurePosixPath(relative_path).with_suffix(".txt")
            captions_or_problem = read_caption_file(caption_path, captions_per_image)
            if not isinstance(captions_or_problem, tuple):
                reject(captions_or_problem.kind, caption_path, captions_or_problem.message, captions_or_problem.line)
                continue
            captions = captions_or_problem

        records.append(
            ImageRecord(
                image_id=image_id,
                path=image_path,
                label=class_id - 1,
                class_key=class_keys[class_id - 1],
                captions=captions,
                official_split=("train" if official[image_number][1][0] else "test") if with_official_split else None,
                bbox=boxes[image_number][1],
                parts=parts.locations[row],
            )
        )
    return class_keys, records
