"""Oxford Flowers 102 from its original folder layout, with Reed et al.'s captions when present.

Layout (``data_dir``): ``jpg/image_00001.jpg`` ... ``jpg/image_08189.jpg``, ``imagelabels.mat`` (labels 1..102, one per
image number), ``setid.mat`` (trnid/valid/tstid image numbers; needed by the official protocol only) and, optional,
``text_c10/class_00001/image_00001.txt`` (ten captions per image; the ``text_dir`` argument overrides the place).
Without ``text_c10`` the ``captions`` column is empty; with it, every image must have its caption file.

The image list comes from ``imagelabels.mat``: image number i is ``jpg/image_<i:05d>.jpg``. A jpg in ``jpg/`` beyond
the labelled numbers is an image without a label (an error, or a skipped item under ``skip_bad``).

Flowers rows have the shared columns only (``image``, ``label``, ``captions``, ``image_id`` = "image_00001"): the
dataset has no boxes or part locations, so there are no ``bbox``/``parts`` columns (no fake values either).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import datasets
import numpy as np

from cam_joint.data.layout_errors import BadItemPolicy, DatasetLayoutError, SkipReport
from cam_joint.data.layout_files import (
    CAPTIONS_PER_IMAGE,
    ImageRecord,
    build_dataset_dict,
    image_file_problem,
    image_text_features,
    read_caption_file,
)
from cam_joint.data.splits import (
    FLOWERS_ETRI2020_CAPTION_TEST_CLASSES,
    FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES,
    PROTOCOLS,
    etri2020_split_indices,
    official_split_indices,
)

logger = logging.getLogger(__name__)

NUM_CLASSES = 102
OFFICIAL_SPLIT_KEYS = {"trnid": "train", "valid": "validation", "tstid": "test"}  # setid.mat array -> split

# Label i (1-based, as in imagelabels.mat) is FLOWERS102_CLASS_NAMES[i - 1]. The dataset itself ships no names; this
# is the list everyone uses (from github.com/jimgoo/caffe-oxford102, also in TensorFlow Datasets), spellings kept as
# published ("barbeton daisy", "pink-yellow dahlia?") so names match other tools. Checked against real images: the 10
# classes of the real flower photos used in development (labels 1, 11, 20, 31, 40, 50, 59, 69, 80, 92) look like their names.
FLOWERS102_CLASS_NAMES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold", "tiger lily",
    "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot", "king protea",
    "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william", "carnation",
    "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower",
    "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium", "orange dahlia",
    "pink-yellow dahlia?", "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush",
    "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania",
    "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
    "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)  # fmt: skip

_IMAGE_FILE_NAME = re.compile(r"image_(\d+)\.jpg")


def class_key(label: int) -> str:
    """Reed et al.'s folder name for 1-based label ``label``: "class_00001"."""
    return f"class_{label:05d}"


def image_id(number: int) -> str:
    return f"image_{number:05d}"


def load_flowers(
    data_dir: str | Path,
    protocol: str = "official",
    *,
    text_dir: str | Path | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    captions_per_image: int | None = CAPTIONS_PER_IMAGE,
    report: SkipReport | None = None,
) -> datasets.DatasetDict:
    """Oxford Flowers 102 as a `DatasetDict` with the splits of ``protocol`` (see `cam_joint.data.splits`).

    Bad items raise `DatasetLayoutError` naming the file and line or .mat entry; with ``skip_bad`` they are left out
    and recorded in ``report`` (if you pass none, the report is logged as a warning).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")
    policy = BadItemPolicy.for_load(skip_bad, report)
    data_dir = Path(data_dir).absolute()  # image paths are stored in the dataset: keep them valid from any cwd
    if text_dir is None and (data_dir / "text_c10").is_dir():
        text_dir = data_dir / "text_c10"
    if text_dir is None:
        logger.info("no text_c10 folder in %s: Flowers captions will be empty", data_dir)
    records = read_flowers_records(
        data_dir,
        text_dir=None if text_dir is None else Path(text_dir),
        policy=policy,
        with_official_split=protocol == "official",
        verify_images=verify_images,
        captions_per_image=captions_per_image,
    )
    if protocol == "official":
        split_indices = official_split_indices(records, tuple(OFFICIAL_SPLIT_KEYS.values()))
    else:
        split_indices = etri2020_split_indices(
            records,
            all_class_keys=[class_key(label) for label in range(1, NUM_CLASSES + 1)],
            caption_test_classes=FLOWERS_ETRI2020_CAPTION_TEST_CLASSES,
            caption_validation_classes=FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES,
            classes_file=data_dir / "imagelabels.mat",
        )
    policy.log_if_owned(logger)
    features = image_text_features(FLOWERS102_CLASS_NAMES, with_bbox_and_parts=False)
    return build_dataset_dict(records, split_indices, features)


def read_mat_vector(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of a MATLAB file as a flat int64 vector (both files store 1 x N arrays)."""
    from scipy.io import loadmat

    if not path.is_file():
        raise DatasetLayoutError(path, "file not found (it is part of the dataset's original layout)")
    try:
        contents = loadmat(path)
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... for damaged files
        raise DatasetLayoutError(path, f"cannot read MATLAB file: {error}") from error
    if key not in contents:
        found = sorted(name for name in contents if not name.startswith("__"))
        raise DatasetLayoutError(path, f"no array {key!r} (found {found})")
    values = np.asarray(contents[key])
    if not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
        raise DatasetLayoutError(path, f"array {key!r} must hold whole numbers")
    return values.astype(np.int64).ravel()


def _official_splits(setid_path: Path, num_images: int, policy: BadItemPolicy) -> dict[int, str]:
    """Image number -> official split, from setid.mat; bad entries are rejected with their array position."""
    split_of: dict[int, tuple[str, str]] = {}  # image number -> (split, entry that put it there)
    for key, split in OFFICIAL_SPLIT_KEYS.items():
        for position, number in enumerate(read_mat_vector(setid_path, key).tolist(), start=1):
            entry = f"{key}({position})"  # MATLAB's 1-based indexing, as a MATLAB user would look it up
            if not 1 <= number <= num_images:
                policy.reject("split entry for an unknown image", setid_path,
                              f"image number {number} is not in 1..{num_images} (imagelabels.mat)", entry=entry)
            elif number in split_of:
                policy.reject("image in two splits", setid_path,
                              f"{image_id(number)} is already in {split_of[number][1]}", entry=entry,
                              image_id=image_id(number))
            else:
                split_of[number] = (split, entry)
    return {number: split for number, (split, _) in split_of.items()}


def read_flowers_records(
    data_dir: Path,
    *,
    text_dir: Path | None,
    policy: BadItemPolicy,
    with_official_split: bool,
    verify_images: bool = False,
    captions_per_image: int | None = CAPTIONS_PER_IMAGE,
) -> list[ImageRecord]:
    """One record per usable image, in image-number order."""
    labels_path = data_dir / "imagelabels.mat"
    labels = read_mat_vector(labels_path, "labels")
    setid_path = data_dir / "setid.mat"
    split_of = _official_splits(setid_path, len(labels), policy) if with_official_split else {}
    image_dir = data_dir / "jpg"
    if not image_dir.is_dir():
        raise DatasetLayoutError(image_dir, "folder not found (expected jpg/image_00001.jpg ...)")

    for name in sorted(entry.name for entry in image_dir.iterdir()):
        match = _IMAGE_FILE_NAME.fullmatch(name)
        if match and not 1 <= int(match.group(1)) <= len(labels):
            policy.reject("image without a label", image_dir / name,
                          f"imagelabels.mat labels only images 1..{len(labels)}", image_id=name.removesuffix(".jpg"))

    records: list[ImageRecord] = []
    for number, label in enumerate(labels.tolist(), start=1):
        this_id = image_id(number)
        if not 1 <= label <= NUM_CLASSES:
            policy.reject("label of an unknown class", labels_path, f"label {label} is not in 1..{NUM_CLASSES}",
                          entry=f"labels({number})", image_id=this_id)
            continue
        if with_official_split and number not in split_of:
            policy.reject("image without a split", setid_path, f"{this_id} is in none of trnid, valid, tstid",
                          image_id=this_id)
            continue
        image_path = image_dir / f"{this_id}.jpg"
        problem = image_file_problem(image_path, verify=verify_images)
        if problem is not None:
            policy.reject(problem.kind, image_path, problem.message, image_id=this_id)
            continue
        captions: tuple[str, ...] = ()
        if text_dir is not None:
            caption_path = text_dir / class_key(label) / f"{this_id}.txt"
            captions_or_problem = read_caption_file(caption_path, captions_per_image)
            if not isinstance(captions_or_problem, tuple):
                policy.reject(captions_or_problem.kind, caption_path, captions_or_problem.message,
                              line=captions_or_problem.line, image_id=this_id)
                continue
            captions = captions_or_problem
        records.append(
            ImageRecord(
                image_id=this_id,
                path=image_path,
                label=label - 1,
                class_key=class_key(label),
                captions=captions,
                official_split=split_of.get(number),
            )
        )
    return records
