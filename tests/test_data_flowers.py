"""Oxford Flowers 102 loader on the REAL imagelabels.mat and setid.mat (8,189 tiny stand-in JPEGs), and on the 73
real JPEGs of ../shared/data/flowers/jpg."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import pytest
from scipy.io import loadmat
from data_layouts import TINY_JPEG, write_small_flowers

from cam_joint.data import SHARED_COLUMNS, SkipReport, load_flowers, load_image_text_dataset, normalize_hub_columns
from cam_joint.data.flowers import FLOWERS102_CLASS_NAMES


@pytest.fixture(scope="session")
def real_flowers(shared_data: Path) -> Path:
    return shared_data / "flowers"


@pytest.fixture(scope="session")
def fake_flowers(tmp_path_factory: pytest.TempPathFactory, real_flowers: Path) -> Path:
    folder = tmp_path_factory.mktemp("flowers")
    for name in ("imagelabels.mat", "setid.mat"):
        os.symlink(real_flowers / name, folder / name)
    (folder / "jpg").mkdir()
    for number in range(1, 8190):
        (folder / "jpg" / f"image_{number:05d}.jpg").write_bytes(TINY_JPEG)
    return folder


@pytest.fixture(scope="session")
def flowers_official(fake_flowers: Path) -> datasets.DatasetDict:
    return load_flowers(fake_flowers)


@pytest.fixture(scope="session")
def flowers_etri2020(fake_flowers: Path) -> datasets.DatasetDict:
    return load_flowers(fake_flowers, "etri2020")


def sizes(dataset_dict: datasets.DatasetDict) -> dict[str, tuple[int, int]]:
    return {split: (len(ds), len(set(ds["label"]))) for split, ds in dataset_dict.items()}


def test_official_split_is_setid_mat(flowers_official):
    assert sizes(flowers_official) == {"train": (1020, 102), "validation": (1020, 102), "test": (6149, 102)}


def test_etri2020_has_table1_counts(flowers_etri2020):
    assert sizes(flowers_etri2020) == {
        "train": (4222, 82),
        "validation": (1406, 82),
        "test": (1406, 82),
        "caption_train": (5878, 62),
        "caption_validation": (1156, 20),
        "caption_test": (1155, 20),
    }


def test_etri2020_classes_are_consistent_across_tasks(flowers_etri2020):
    classes = {split: set(ds["label"]) for split, ds in flowers_etri2020.items()}
    assert classes["train"] == classes["validation"] == classes["test"]
    assert classes["train"] == classes["caption_train"] | classes["caption_validation"]
    assert not classes["caption_train"] & classes["caption_validation"]
    assert not classes["caption_test"] & classes["train"]
    assert len(classes["train"] | classes["caption_test"]) == 102
    ids = {split: set(ds["image_id"]) for split, ds in flowers_etri2020.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert len(ids["train"] | ids["validation"] | ids["test"] | ids["caption_test"]) == 8189


def test_rows_have_shared_columns_and_named_labels(flowers_official, real_flowers):
    train = flowers_official["train"]
    assert train.column_names == ["image", "label", "captions", "image_id"]  # no bbox/parts for flowers
    assert train.features["label"].names == list(FLOWERS102_CLASS_NAMES)
    trnid = loadmat(real_flowers / "setid.mat")["trnid"].ravel()
    assert train["image_id"] == [f"image_{number:05d}" for number in sorted(trnid)]  # image-number order
    row = train[0]
    assert row["captions"] == []  # no text_c10 folder: classification only
    assert row["image"].size == (8, 8)


def test_real_jpegs_decode_with_the_right_class_names(real_flowers):
    # The real folder holds 73 of the 8,189 images: the others are missing, which needs skip_bad and is reported.
    report = SkipReport()
    dataset = load_flowers(real_flowers, skip_bad=True, verify_images=True, report=report)
    rows = {row["image_id"]: row for split in dataset.values() for row in split}
    assert len(rows) == 73
    assert len(report) == 8189 - 73 and report.counts() == {"missing image file": 8116}
    names = dataset["train"].features["label"]
    assert names.int2str(rows["image_04897"]["label"]) == "giant white arum lily"
    assert names.int2str(rows["image_01964"]["label"]) == "anthurium"
    assert names.int2str(rows["image_06735"]["label"]) == "pink primrose"
    assert min(rows["image_03095"]["image"].size) == 160  # real pixels, decoded lazily from the path


def test_captions_are_read_when_text_c10_exists(tmp_path):
    folder = write_small_flowers(tmp_path, with_captions=True)
    dataset = load_flowers(folder)
    row = dataset["train"][0]
    assert row["image_id"] == "image_00001"
    assert row["captions"][0] == "this flower 1 has petals, caption 0"
    assert len(row["captions"]) == 10


def test_dispatcher_loads_flowers_by_name(tmp_path):
    folder = write_small_flowers(tmp_path)
    dataset = load_image_text_dataset("flowers", data_dir=folder, protocol="etri2020")
    assert list(dataset) == ["train", "validation", "test", "caption_train", "caption_validation", "caption_test"]
    with pytest.raises(ValueError, match="data_dir is required"):
        load_image_text_dataset("flowers")


def test_other_names_go_to_load_dataset_and_get_the_shared_columns(tmp_path):
    # "imagefolder" is a builder that needs no network; a Hub id takes the same path.
    for class_name in ("rose", "tulip"):
        (tmp_path / "train" / class_name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "train" / class_name / f"{i}.jpg").write_bytes(TINY_JPEG)
    dataset = load_image_text_dataset("imagefolder", data_dir=tmp_path)
    train = dataset["train"]
    assert set(train.column_names) == set(SHARED_COLUMNS)
    assert train.features["label"].names == ["rose", "tulip"]
    assert train[0]["captions"] == [] and train[0]["image_id"] == "train/000000"
    with pytest.raises(ValueError, match="defined for cub and flowers only"):
        load_image_text_dataset("imagefolder", data_dir=tmp_path, protocol="etri2020")


def test_hub_columns_are_renamed_and_converted():
    hub_like = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"img": ["a.jpg"], "class": ["tulip"], "text": ["a red flower"]}),
            "test": datasets.Dataset.from_dict({"img": ["b.jpg"], "class": ["rose"], "text": ["a pink flower"]}),
        }
    )
    dataset = normalize_hub_columns(hub_like)
    assert dataset["train"].features["label"].names == ["rose", "tulip"]  # one ClassLabel for all splits
    assert dataset["train"][0]["label"] == 1 and dataset["test"][0]["label"] == 0
    assert dataset["train"][0]["captions"] == ["a red flower"]
    assert set(SHARED_COLUMNS) <= set(dataset["train"].column_names)
