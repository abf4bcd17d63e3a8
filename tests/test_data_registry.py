"""The dataset registry: one entry per dataset, loaders imported lazily, entries that tell the truth, easy to extend."""

import argparse
import subprocess
import sys
import textwrap

import datasets
import pytest
from data_layouts import write_small_cub, write_small_flowers

import cam_joint.data.registry as registry
from cam_joint.data import (
    DATASETS,
    SHARED_COLUMNS,
    DatasetSpec,
    SkipReport,
    find_dataset,
    load_dataset_by_name,
    load_image_text_dataset,
    register_dataset,
    registered_protocols,
)
from cam_joint.data.prepare import build, loader_options

SMALL_SYNTHETIC = dict(num_classes=4, train_per_class=1, validation_per_class=1, test_per_class=1, image_size=32)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    return registry


def test_builtin_entries():
    assert list(DATASETS) == ["cub", "flowers", "synthetic"]
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.title and "\n" not in spec.title
        assert callable(spec.load_function())
    assert DATASETS["cub"].needs_data_dir and DATASETS["flowers"].needs_data_dir
    assert not DATASETS["synthetic"].needs_data_dir
    assert find_dataset("cub200") is DATASETS["cub"] and find_dataset("flowers102") is DATASETS["flowers"]
    assert find_dataset("someone/some-birds") is None
    assert registered_protocols() == ("official", "etri2020")
    assert load_image_text_dataset is load_dataset_by_name  # the old name keeps working


def test_extra_columns_are_what_the_loaders_give(tmp_path):
    loaded = {
        "cub": load_dataset_by_name("cub", data_dir=write_small_cub(tmp_path / "birds")),
        "flowers": load_dataset_by_name("flowers", data_dir=write_small_flowers(tmp_path / "flowers")),
        "synthetic": load_dataset_by_name("synthetic", **SMALL_SYNTHETIC),
    }
    assert set(loaded) == set(DATASETS)  # a new entry needs a case here
    for name, dataset_dict in loaded.items():
        for split in dataset_dict.values():
            assert sorted(split.column_names) == sorted(SHARED_COLUMNS + DATASETS[name].extra_columns), name


def test_dispatch_passes_arguments_and_refuses_what_does_not_apply(tmp_path):
    birds = load_dataset_by_name("synthetic", seed=3, distractors=2, **SMALL_SYNTHETIC)
    assert "distractor_parts" in birds["train"].column_names
    etri = load_dataset_by_name("flowers102", data_dir=write_small_flowers(tmp_path / "f"), protocol="etri2020")
    assert "caption_test" in etri
    assert list(load_dataset_by_name("cub200", data_dir=write_small_cub(tmp_path / "b"))) == ["train", "test"]
    with pytest.raises(ValueError, match=r"synthetic: protocol 'etri2020' does not apply; synthetic has 'official'"):
        load_dataset_by_name("synthetic", protocol="etri2020")
    with pytest.raises(ValueError, match=r"synthetic: takes no data_dir .*got data_dir='x'"):
        load_dataset_by_name("synthetic", data_dir="x")
    with pytest.raises(ValueError, match=r"cub: data_dir is required"):
        load_dataset_by_name("cub")
    with pytest.raises(ValueError, match=r"cub: protocol 'reed2016' does not apply; cub has 'official', 'etri2020'"):
        load_dataset_by_name("cub", data_dir=tmp_path, protocol="reed2016")


def test_a_new_dataset_is_one_loader_file_and_one_line(tmp_path, monkeypatch, scratch_registry):
    (tmp_path / "my_squares.py").write_text(textwrap.dedent('''
        import datasets
        from PIL import Image

        def load_squares(data_dir, protocol="official", *, size=4):
            rows = {"image": [Image.new("RGB", (size, size))], "label": [0], "captions": [["a square"]],
                    "image_id": ["sq/0"]}
            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["sq"]),
                                          "captions": datasets.Sequence(datasets.Value("string")),
                                          "image_id": datasets.Value("string")})
            return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    register_dataset(DatasetSpec("squares", "one black square", "my_squares:load_squares", needs_data_dir=True))
    assert "my_squares" not in sys.modules  # imported only when loaded
    squares = scratch_registry.load_dataset_by_name("squares", data_dir=tmp_path, size=6)
    assert squares["train"][0]["image"].size == (6, 6)
    assert scratch_registry.DATASETS["squares"].title == "one black square"

    with pytest.raises(ValueError, match=r"dataset name 'squares' is already registered \(by 'squares'\)"):
        register_dataset(DatasetSpec("squares", "again", "my_squares:load_squares"))
    with pytest.raises(ValueError, match=r"'cub200' is already registered \(by 'cub'\)"):
        register_dataset(DatasetSpec("birds", "birds", "my_squares:load_squares", aliases=("cub200",)))
    register_dataset(DatasetSpec("squares", "replaced", "my_squares:load_squares", aliases=("sq",)), replace=True)
    assert scratch_registry.find_dataset("sq").title == "replaced"


def test_bad_entries_are_named():
    with pytest.raises(ValueError, match=r"dataset 'x': loader must be 'package.module:function', got 'x.load'"):
        DatasetSpec("x", "x", "x.load")
    with pytest.raises(ValueError, match=r"dataset 'x': protocols must include 'official'"):
        DatasetSpec("x", "x", "x:load", protocols=("mine",))
    with pytest.raises(ImportError, match=r"dataset 'x': module cam_joint.data.cub has no loader 'load_kub'"):
        DatasetSpec("x", "x", "cam_joint.data.cub:load_kub").load_function()


def test_other_names_are_hub_ids():
    # Loading one is tested in test_data_flowers (the "imagefolder" builder); here only what the registry decides.
    with pytest.raises(ValueError, match=r"protocol 'etri2020' is defined for cub and flowers only"):
        load_dataset_by_name("someone/some-birds", protocol="etri2020")


def test_import_stays_light():
    # `datasets`, scipy and the drawing code are imported only when a dataset is loaded.
    code = ("import sys, cam_joint; before = set(sys.modules); import cam_joint.data; cam_joint.data.DATASETS; "
            "print(sorted(set(sys.modules) - before))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    new_modules = eval(loaded.stdout)
    third_party = {name.split(".")[0] for name in new_modules} - set(sys.stdlib_module_names) - {"cam_joint"}
    assert not {name for name in third_party if not name.startswith("_")}, third_party
    assert "cam_joint.data.synthetic" not in new_modules and "cam_joint.data.cub" not in new_modules


# ------------------------------------------------------------------------------------------------ prepare-data
def prepare_args(**given):
    defaults = dict(dataset="synthetic", data_dir=None, protocol="official", text_dir=None, skip_bad=False,
                    verify_images=False, seed=None, distractors=None)
    return argparse.Namespace(**{**defaults, **given})


def test_prepare_data_passes_the_options_a_loader_takes():
    report = SkipReport()
    synthetic = DATASETS["synthetic"].load_function()
    assert loader_options(prepare_args(seed=3, distractors=8), synthetic, report) == {"seed": 3, "distractors": 8}
    cub = DATASETS["cub"].load_function()
    assert loader_options(prepare_args(dataset="cub", skip_bad=True), cub, report) == {"skip_bad": True,
                                                                                       "report": report}
    with pytest.raises(SystemExit, match="--seed does not apply to --dataset cub"):
        loader_options(prepare_args(dataset="cub", seed=1), cub, report)
    with pytest.raises(SystemExit, match="--text-dir does not apply to --dataset synthetic"):
        loader_options(prepare_args(text_dir="t"), synthetic, report)


def test_prepare_data_checks_the_folder_against_the_registry(tmp_path):
    with pytest.raises(SystemExit, match="--data-dir is required for --dataset flowers"):
        build(prepare_args(dataset="flowers"), SkipReport())
    with pytest.raises(SystemExit, match="--dataset synthetic reads no folder; leave out --data-dir"):
        build(prepare_args(data_dir=tmp_path), SkipReport())
    flowers = build(prepare_args(dataset="flowers", data_dir=write_small_flowers(tmp_path / "f"),
                                 protocol="etri2020"), SkipReport())
    assert "caption_train" in flowers
