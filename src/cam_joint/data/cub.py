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


@dataclass
class _CubTables:
    """CUB's metadata files, read and keyed by image id (``images.txt`` order)."""

    class_keys: list[str]
    classes: dict
    images: dict
    labels: dict
    boxes: dict
    official: dict
    parts: PartLocations


def _read_cub_tables(root: Path, policy: BadItemPolicy, with_official_split: bool) -> _CubTables:
    classes_path = root / "classes.txt"
    classes = _read_name_table(classes_path, policy)
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        # Labels are class id - 1; a gap would shift every later class, so this is not skippable.
        raise DatasetLayoutError(classes_path, f"class ids must be 1..{len(class_ids)} without gaps")
    images = _read_name_table(root / "images.txt", policy)
    labels_path, boxes_path, split_path = (root / "image_class_labels.txt", root / "bounding_boxes.txt",
                                           root / "train_test_split.txt")
    labels = _by_image_id(_read_id_number_table(labels_path, 1, policy, whole=(1,)), labels_path, policy)
    boxes = _by_image_id(_read_id_number_table(boxes_path, 4, policy), boxes_path, policy)
    official = (
        _by_image_id(_read_id_number_table(split_path, 1, policy, flags=(1,)), split_path, policy)
        if with_official_split else {}
    )
    parts = _read_part_locations(root / "parts" / "part_locs.txt", list(images), policy)
    # Metadata about images that images.txt does not list is a sign of mismatched files: report it too.
    for path, table in ((labels_path, labels), (boxes_path, boxes), (split_path, official)):
        for image_number, (line, _) in table.items():
            if image_number not in images:
                policy.reject("metadata for an unknown image", path, f"image id {image_number} is not in images.txt",
                              line=line)
    return _CubTables([classes[i][1] for i in class_ids], classes, images, labels, boxes, official, parts)


def _metadata_problem(root: Path, tables: _CubTables, row: int, image_number: int, line: int,
                      with_official_split: bool) -> tuple[str, Path, str, int | None] | None:
    """(kind, file, problem, line) when an image's metadata is incomplete, else None."""
    images_path = root / "images.txt"
    if image_number not in tables.labels:
        return ("image without a label", images_path,
                f"image id {image_number} has no line in image_class_labels.txt", line)
    label_line, (class_id,) = tables.labels[image_number]
    if int(class_id) not in tables.classes:
        return ("label of an unknown class", root / "image_class_labels.txt",
                f"class id {int(class_id)} is not in classes.txt", label_line)
    if image_number not in tables.boxes:
        return ("image without a bounding box", images_path,
                f"image id {image_number} has no line in bounding_boxes.txt", line)
    if not tables.parts.given[row].all():
        missing_parts = (np.flatnonzero(~tables.parts.given[row]) + 1).tolist()
        return ("image without part locations", images_path,
                f"image id {image_number} has no line in parts/part_locs.txt for part(s) {missing_parts}", line)
    if with_official_split and image_number not in tables.official:
        return ("image without a split", images_path,
                f"image id {image_number} has no line in train_test_split.txt", line)
    return None


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
    tables = _read_cub_tables(root, policy, with_official_split)
    records: list[ImageRecord] = []
    for row, (image_number, (line, relative_path)) in enumerate(tables.images.items()):
        image_id = str(PurePosixPath(relative_path).with_suffix(""))
        problem = _metadata_problem(root, tables, row, image_number, line, with_official_split)
        image_path = root / "images" / relative_path
        if problem is None:
            found = image_file_problem(image_path, verify=verify_images)
            problem = None if found is None else (found.kind, image_path, found.message, None)
        captions: tuple[str, ...] = ()
        if problem is None and text_dir is not None:
            caption_path = text_dir / PurePosixPath(relative_path).with_suffix(".txt")
            captions_or_problem = read_caption_file(caption_path, captions_per_image)
            if isinstance(captions_or_problem, tuple):
                captions = captions_or_problem
            else:
                problem = (captions_or_problem.kind, caption_path, captions_or_problem.message,
                           captions_or_problem.line)
        if problem is not None:
            kind, path, message, problem_line = problem
            policy.reject(kind, path, message, line=problem_line, image_id=image_id)
            continue
        class_id = int(tables.labels[image_number][1][0])
        official = tables.official[image_number][1][0] if with_official_split else None
        records.append(ImageRecord(
            image_id=image_id, path=image_path, label=class_id - 1, class_key=tables.class_keys[class_id - 1],
            captions=captions, official_split=None if official is None else ("train" if official else "test"),
            bbox=tables.boxes[image_number][1], parts=tables.parts.locations[row],
        ))
    return tables.class_keys, records
