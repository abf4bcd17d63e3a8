"""Reading the pieces every original dataset layout shares: whitespace tables, caption files, image files.

Also the column schema shared by every dataset of the project (CUB, Flowers, the synthetic birds):

* ``image``: `datasets.Image()`, stored as the file PATH and decoded lazily, so 11,788 images are never held in RAM.
  (`save_to_disk` of datasets 5.x copies the image bytes into the saved shards, so a saved dataset stands alone.)
* ``label``: `ClassLabel` with readable names; ids are the dataset's own class ids minus one, for every split and
  protocol, so a label means the same class everywhere (an etri2020 split covering 150 of CUB's 200 classes still
  has a 200-name `ClassLabel`).
* ``captions``: `Sequence(Value("string"))`, the caption file's lines as written (whitespace stripped), possibly empty.
* ``image_id``: a stable string id (CUB: the `images.txt` path without extension; Flowers: ``image_00001``).
* CUB only: ``bbox`` (x, y, width, height) and ``parts`` (15 x [x, y, visible]) in original image pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pyarrow as pa

from cam_joint.data.layout_errors import BadItemPolicy, DatasetLayoutError
from cam_joint.image_processing_cam_joint import exif_upright

CAPTIONS_PER_IMAGE = 10  # Reed et al.'s text_c10: ten descriptions per image, one per line

# File signatures of the formats these datasets ship in (and PNG, for re-encoded copies). Reading 16 bytes per file
# is cheap enough to do for every image on every load; decoding every image is not (see `image_file_problem`).
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


@dataclass(frozen=True)
class Problem:
    """Why one item cannot be loaded; the loader turns it into an error or a skipped-item entry."""

    kind: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image as read from a dataset's layout, before it is assigned to splits."""

    image_id: str
    path: Path
    label: int  # 0-based index into the dataset's class names
    class_key: str  # the class as split protocols name it: "001.Black_footed_Albatross", "class_00001"
    captions: tuple[str, ...]
    official_split: str | None = None  # "train" / "validation" / "test", when the protocol needs it
    bbox: np.ndarray | None = None  # (4,): x, y, width, height
    parts: np.ndarray | None = None  # (parts, 3): x, y, visible


@dataclass(frozen=True)
class TableLine:
    number: int  # 1-based line number in the file, counting blank lines, for error messages
    fields: list[str]


@dataclass(frozen=True)
class NumberTable:
    """The numeric lines of a metadata file: ``values[i]`` was read from line ``line_numbers[i]``."""

    values: np.ndarray  # (rows, fields) float64
    line_numbers: np.ndarray  # (rows,) int64, 1-based

    def select(self, keep: np.ndarray) -> "NumberTable":
        return NumberTable(self.values[keep], self.line_numbers[keep])


def read_text(path: Path) -> str:
    """A metadata file's text with `\n` line ends, whatever it had (`\r\n` from Windows), without a UTF-8 BOM."""
    if not path.is_file():
        raise DatasetLayoutError(path, "file not found (it is part of the dataset's original layout)")
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:  # newline=None: universal newlines
            return handle.read()
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from error


def read_table(path: Path) -> list[TableLine]:
    """Whitespace-separated fields of each non-blank line of a metadata file."""
    return [
        TableLine(number, line.split()) for number, line in enumerate(read_text(path).split("\n"), start=1)
        if line.strip()
    ]


def read_number_table(path: Path, n_fields: int, policy: BadItemPolicy) -> NumberTable:
    """Lines of exactly ``n_fields`` finite numbers; any other non-blank line is rejected (error or skipped).

    CUB's part_locs.txt has 176,820 lines, so well-formed files take a vectorised path; only when that finds
    something wrong does the line-by-line path run, to name each bad line.
    """
    text = read_text(path)
    if ";" not in text:
        # ";" marks line ends among the tokens, so every line's field count can be checked without a Python loop.
        tokens = np.array((text + "\n").replace("\n", " ; ").split())
        is_line_end = tokens == ";"
        fields_per_line = np.diff(np.flatnonzero(is_line_end), prepend=-1) - 1
        non_blank = fields_per_line > 0
        if np.all(fields_per_line[non_blank] == n_fields):
            try:
                values = tokens[~is_line_end].astype(np.float64).reshape(-1, n_fields)
            except ValueError:
                values = None  # a token that is not a number: the slow path names its line
            if values is not None and np.all(np.isfinite(values)):
                return NumberTable(values, np.flatnonzero(non_blank) + 1)
    rows: list[list[float]] = []
    line_numbers: list[int] = []
    for table_line in read_table(path):
        if len(table_line.fields) != n_fields:
            policy.reject("bad metadata line", path, f"expected {n_fields} fields, found {len(table_line.fields)}",
                          line=table_line.number)
            continue
        try:
            row = [float(field) for field in table_line.fields]
        except ValueError:
            row = []
        if len(row) != n_fields or not all(math.isfinite(value) for value in row):
            found = " ".join(table_line.fields)
            policy.reject("bad metadata line", path, f"expected {n_fields} numbers, found {found!r}",
                          line=table_line.number)
            continue
        rows.append(row)
        line_numbers.append(table_line.number)
    return NumberTable(np.array(rows, dtype=np.float64).reshape(-1, n_fields), np.array(line_numbers, dtype=np.int64))


def reject_lines(table: NumberTable, bad: np.ndarray, path: Path, problem: str, policy: BadItemPolicy) -> NumberTable:
    """Reject the rows where ``bad`` is true (each names its line) and return the others."""
    for line in table.line_numbers[bad].tolist():
        policy.reject("bad metadata line", path, problem, line=line)
    return table.select(~bad)


def is_whole(values: np.ndarray) -> np.ndarray:
    return values == np.round(values)


def read_caption_file(path: Path, expected: int | None = CAPTIONS_PER_IMAGE) -> tuple[str, ...] | Problem:
    """The captions of one image, one per line, stripped; a `Problem` if the file is missing or malformed.

    Trailing blank lines (a final newline, or two) are fine; a blank line between captions is not, because it
    means a caption is missing. With ``expected`` set, the file must hold exactly that many captions.
    """
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return Problem("missing caption file", "caption file not found")
    except UnicodeDecodeError as error:
        return Problem("bad caption file", f"not UTF-8 text ({error.reason} at byte {error.start})")
    except OSError as error:
        return Problem("bad caption file", f"cannot read caption file: {error.strerror}")
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            return Problem("bad caption file", f"line {number} is empty (expected one caption per line)", number)
    if expected is not None and len(lines) != expected:
        first_wrong_line = min(len(lines), expected) + 1
        return Problem(
            "bad caption file",
            f"has {len(lines)} caption line(s), expected {expected}"
            " (pass captions_per_image=None to accept any number)",
            first_wrong_line,
        )
    return tuple(line.strip() for line in lines)


def image_file_problem(path: Path, verify: bool = False) -> Problem | None:
    """Check one image file: it exists and starts like a JPEG/PNG; with ``verify``, it also decodes completely.

    Why two levels: opening a file and reading its first bytes costs little, and catches missing files, empty files
    and non-images (an HTML error page saved as .jpg). A JPEG truncated in the middle passes that check and only
    fails when decoded, and decoding every image takes minutes on the full datasets, so it is opt-in. Without it,
    such a file fails later, in `datasets`' lazy decoding, with PIL's message ("image file is truncated"), which does
    not name the file: the row's ``image_id`` column does.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        return Problem("missing image file", "image file not found")
    except IsADirectoryError:
        return Problem("missing image file", "is a directory, not an image file")
    except OSError as error:
        return Problem("unreadable image file", f"cannot read image file: {error.strerror}")
    if not head:
        return Problem("corrupt image file", "image file is empty")
    if not head.startswith(_IMAGE_SIGNATURES):
        return Problem("corrupt image file", f"not a JPEG or PNG file (starts with {head[:8]!r})")
    if verify:
        return _decode_problem(path)
    return None


def _decode_problem(path: Path) -> Problem | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG only: decode at 1/8 scale. The decoder still reads the whole compressed stream, so truncation and
            # corrupt data are still caught, at a fraction of the cost of a full-size decode.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... depending on the damage
        return Problem("corrupt image file", f"image does not decode: {error}")
    return None


def decode_image(value: dict | str, image_id: str | None = None):
    """Decode one undecoded ``image`` value (``{"path", "bytes"}``, as a dataset cast to ``Image(decode=False)``
    returns it), raising `DatasetLayoutError` that names the file and the row's ``image_id`` if it does not decode.

    The image comes back upright (EXIF orientation applied, `exif_upright`). `datasets`' own lazy decoding raises
    PIL's bare message ("image file is truncated"), naming no file; code that
    wants the name (a training loop's collate function) decodes with this instead.
    """
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    try:
        image = datasets.Image().decode_example(value)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... depending on the damage
        row = f" (image {image_id})" if image_id else ""
        raise DatasetLayoutError(value.get("path") or "<image bytes>", f"image does not decode: {error}{row}") from error
    # datasets 5 transposes by the EXIF orientation itself; this keeps it so with any release (a no-op when upright).
    return exif_upright(image)


def image_text_features(
    class_names: Sequence[str], *, with_bbox_and_parts: bool, num_parts: int = 15
) -> datasets.Features:
    """The shared columns (see the module docstring), plus ``bbox`` and ``parts`` for CUB."""
    columns: dict[str, datasets.features.features.FeatureType] = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(class_names)),
        "captions": datasets.Sequence(datasets.Value("string")),
        "image_id": datasets.Value("string"),
    }
    if with_bbox_and_parts:
        columns["bbox"] = datasets.Sequence(datasets.Value("float32"), length=4)
        columns["parts"] = datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=3), length=num_parts)
    return datasets.Features(columns)


def records_to_dataset(records: Sequence[ImageRecord], features: datasets.Features, split: str) -> datasets.Dataset:
    """A `datasets.Dataset` whose ``image`` column holds file paths (decoded only when a row is read).

    Columns are handed over as Arrow arrays: encoding 11,788 rows one example at a time takes seconds.
    """
    columns: dict[str, pa.Array] = {
        "image": pa.array([str(record.path) for record in records], pa.string()),
        "label": pa.array([record.label for record in records], pa.int64()),
        "captions": pa.array([list(record.captions) for record in records], pa.list_(pa.string())),
        "image_id": pa.array([record.image_id for record in records], pa.string()),
    }
    if "bbox" in features:
        num_parts = features["parts"].length
        boxes = np.array([record.bbox for record in records], dtype=np.float32).reshape(-1)
        parts = np.array([record.parts for record in records], dtype=np.float32).reshape(-1)
        columns["bbox"] = pa.FixedSizeListArray.from_arrays(pa.array(boxes), 4)
        columns["parts"] = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array(parts), 3),
                                                             num_parts)
    return datasets.Dataset.from_dict(columns, features=features, split=datasets.NamedSplit(split))


def build_dataset_dict(
    records: Sequence[ImageRecord], split_indices: dict[str, list[int]], features: datasets.Features
) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {
            split: records_to_dataset([records[i] for i in indices], features, split)
            for split, indices in split_indices.items()
        }
    )
