"""CUB-200-2011 loader on the REAL metadata and captions of all 11,788 images (tiny stand-in JPEGs).

The layout is ``<tmp>/birds/CUB_200_2011/...`` with the real metadata files linked in, a tiny JPEG under every real
image name, and the real ``text_c10`` linked BESIDE the CUB_200_2011 folder (Reed's archive layout).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import datasets
import pytest
from data_layouts import TINY_JPEG, write_small_cub

from cam_joint.data import load_cub
from cam_joint.data.splits import CUB_STACKGAN_TEST_CLASSES

METADATA_FILES = (
    "classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
    "parts/part_locs.txt",
)  # fmt: skip


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def real_cub(shared_data: Path) -> Path:
    return shared_data / "cub"


@pytest.fixture(scope="session")
def fake_cub_parent(tmp_path_factory: pytest.TempPathFactory, real_cub: Path) -> Path:
    parent = tmp_path_factory.mktemp("birds")
    root = parent / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    for name in METADATA_FILES:
        os.symlink(real_cub / name, root / name)
    os.symlink(real_cub / "text_c10", parent / "text_c10")
    for line in read_lines(real_cub / "images.txt"):
        image_path = root / "images" / line.split()[1]
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(TINY_JPEG)
    return parent


@pytest.fixture(scope="session")
def cub_official(fake_cub_parent: Path) -> datasets.DatasetDict:
    return load_cub(fake_cub_parent)  # the parent of CUB_200_2011


@pytest.fixture(scope="session")
def cub_etri2020(fake_cub_parent: Path) -> datasets.DatasetDict:
    return load_cub(fake_cub_parent / "CUB_200_2011", "etri2020")  # the CUB_200_2011 folder itself


def class_count(dataset: datasets.Dataset) -> int:
    return len(set(dataset["label"]))


def class_folders(dataset: datasets.Dataset) -> set[str]:
    return {image_id.split("/")[0] for image_id in dataset["image_id"]}


def test_official_split_has_the_papers_sizes(cub_official):
    assert list(cub_official) == ["train", "test"]
    assert (len(cub_official["train"]), len(cub_official["test"])) == (5994, 5794)
    assert class_count(cub_official["train"]) == class_count(cub_official["test"]) == 200


def test_official_split_follows_train_test_split_txt(cub_official, real_cub):
    images = dict(line.split() for line in read_lines(real_cub / "images.txt"))
    is_train = dict(line.split() for line in read_lines(real_cub / "train_test_split.txt"))
    expected_train = {images[i].removesuffix(".jpg") for i, flag in is_train.items() if flag == "1"}
    assert set(cub_official["train"]["image_id"]) == expected_train


def test_etri2020_has_table1_counts(cub_etri2020):
    sizes = {split: (len(ds), class_count(ds)) for split, ds in cub_etri2020.items()}
    assert sizes == {
        "train": (5313, 150),
        "validation": (1771, 150),
        "test": (1771, 150),
        "caption_train": (5894, 100),
        "caption_validation": (2961, 50),
        "caption_test": (2933, 50),
    }


def test_etri2020_uses_the_stackgan_class_split(cub_etri2020, real_cub):
    stackgan_train = set(read_lines(real_cub / "splits" / "stackgan_trainclasses.txt"))
    stackgan_test = set(read_lines(real_cub / "splits" / "stackgan_testclasses.txt"))
    assert set(CUB_STACKGAN_TEST_CLASSES) == stackgan_test
    for split in ("train", "validation", "test"):
        assert class_folders(cub_etri2020[split]) == stackgan_train
    assert class_folders(cub_etri2020["caption_test"]) == stackgan_test
    caption_train = class_folders(cub_etri2020["caption_train"])
    caption_validation = class_folders(cub_etri2020["caption_validation"])
    assert not caption_train & caption_validation
    assert caption_train | caption_validation == stackgan_train


def test_etri2020_classification_splits_partition_the_150_classes_images(cub_etri2020):
    ids = {split: set(cub_etri2020[split]["image_id"]) for split in ("train", "validation", "test")}
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    captioned = set(cub_etri2020["caption_train"]["image_id"]) | set(cub_etri2020["caption_validation"]["image_id"])
    assert ids["train"] | ids["validation"] | ids["test"] == captioned
    # 60/20/20 within every class, not only in total: each class keeps ~60% for training.
    per_class_train = Counter(image_id.split("/")[0] for image_id in cub_etri2020["train"]["image_id"])
    per_class_all = Counter(image_id.split("/")[0] for image_id in captioned)
    assert all(0.55 <= per_class_train[c] / n <= 0.65 for c, n in per_class_all.items())


def test_rows_carry_real_metadata_and_captions(cub_official, real_cub):
    row = cub_official["test"][0]  # image 1 of images.txt is a test image
    assert row["image_id"] == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18"
    assert cub_official["test"].features["label"].int2str(row["label"]) == "Black_footed_Albatross"
    assert row["bbox"] == [60.0, 27.0, 325.0, 304.0]
    assert len(row["parts"]) == 15
    assert row["parts"][0] == [0.0, 0.0, 0.0]  # back: not visible
    assert row["parts"][1] == [312.0, 182.0, 1.0]  # beak
    caption_file = real_cub / "text_c10" / "001.Black_footed_Albatross" / "Black_Footed_Albatross_0046_18.txt"
    assert row["captions"] == read_lines(caption_file)
    assert len(row["captions"]) == 10
    assert row["image"].size == (8, 8)


def test_every_image_has_ten_captions_and_all_labels_are_named(cub_official):
    for split in cub_official.values():
        assert all(len(captions) == 10 for captions in split["captions"])
    names = cub_official["train"].features["label"].names
    assert len(names) == 200 and names[0] == "Black_footed_Albatross" and names[199] == "Common_Yellowthroat"
    assert cub_official["train"].features == cub_official["test"].features


def test_image_column_keeps_paths_not_pixels(cub_official, fake_cub_parent):
    stored = cub_official["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert stored["bytes"] is None
    assert Path(stored["path"]).is_file()
    assert Path(stored["path"]).is_relative_to(fake_cub_parent)


def test_captions_may_sit_inside_or_beside_the_cub_folder(tmp_path):
    inside = load_cub(write_small_cub(tmp_path / "a", text_location="inside"))
    beside = load_cub(write_small_cub(tmp_path / "b", text_location="beside"))
    assert inside["train"]["captions"] == beside["train"]["captions"]
    assert inside["train"][0]["captions"][0] == "This bird, number 1, has caption 1."  # punctuation kept


def test_without_text_c10_captions_are_empty_and_classification_still_works(tmp_path, caplog):
    dataset = load_cub(write_small_cub(tmp_path, text_location=None))
    assert all(captions == [] for captions in dataset["train"]["captions"])
    assert len(dataset["train"]) + len(dataset["test"]) == 12
    assert "captions will be empty" in caplog.text
