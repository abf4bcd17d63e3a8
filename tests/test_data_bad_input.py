"""Bad input loses nothing silently: each problem is an error naming file and line, or, under --skip-bad / skip_bad,
a skipped item in a printed report. Also the `cam-joint prepare-data` command end to end.

All layouts here are small ones written from scratch (tests/data_layouts.py), so these run without ../shared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from data_layouts import (
    SMALL_CUB_CLASSES,
    TINY_JPEG,
    small_cub_captions,
    write_small_cub,
    write_small_flowers,
)
from scipy.io import savemat

from cam_joint.data import DatasetLayoutError, SkipReport, decode_image, load_cub, load_flowers

FIRST_IMAGE = "images/001.Black_footed_Albatross/Black_footed_Albatross_0001.jpg"
FIRST_CAPTIONS = "text_c10/001.Black_footed_Albatross/Black_footed_Albatross_0001.txt"


@pytest.fixture
def cub(tmp_path: Path) -> Path:
    return write_small_cub(tmp_path)


def total_rows(dataset_dict: datasets.DatasetDict) -> int:
    return sum(len(split) for split in dataset_dict.values())


def replace_line(path: Path, line_number: int, new_line: str | None) -> None:
    lines = path.read_text().splitlines()
    if new_line is None:
        del lines[line_number - 1]
    else:
        lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


def test_the_error_type_is_a_value_error_with_file_and_line():
    error = DatasetLayoutError(Path("a/images.txt"), "something is off", line=7)
    assert isinstance(error, ValueError)
    assert str(error) == "a/images.txt:7: something is off"


# ------------------------------------------------------------------------------------------------------- images
def test_missing_image_is_an_error_naming_the_file_or_a_reported_skip(cub):
    (cub / FIRST_IMAGE).unlink()
    with pytest.raises(DatasetLayoutError, match=r"Black_footed_Albatross_0001\.jpg: image file not found"):
        load_cub(cub)
    report = SkipReport()
    dataset = load_cub(cub, skip_bad=True, report=report)
    assert total_rows(dataset) == 11
    assert report.counts() == {"missing image file": 1}
    assert report.items[0].image_id == "001.Black_footed_Albatross/Black_footed_Albatross_0001"
    assert "Black_footed_Albatross_0001.jpg: image file not found" in report.format()


def test_skipped_items_are_logged_when_the_caller_keeps_no_report(cub, caplog):
    (cub / FIRST_IMAGE).unlink()
    assert total_rows(load_cub(cub, skip_bad=True)) == 11
    assert "Skipped 1 bad item(s)" in caplog.text and "1 x missing image file" in caplog.text


def test_a_file_that_is_not_an_image_is_caught_at_load_time(cub):
    (cub / FIRST_IMAGE).write_text("<html>404 Not Found</html>")
    with pytest.raises(DatasetLayoutError, match=r"0001\.jpg: not a JPEG or PNG file"):
        load_cub(cub)


def test_a_truncated_jpeg_is_caught_by_verify_images(cub):
    real_jpeg = _noisy_jpeg()
    (cub / FIRST_IMAGE).write_bytes(real_jpeg[: len(real_jpeg) // 2])
    assert total_rows(load_cub(cub)) == 12  # the cheap check only reads the header: it passes
    with pytest.raises(DatasetLayoutError, match=r"0001\.jpg: image does not decode"):
        load_cub(cub, verify_images=True)
    report = SkipReport()
    assert total_rows(load_cub(cub, verify_images=True, skip_bad=True, report=report)) == 11
    assert report.counts() == {"corrupt image file": 1}


def test_a_truncated_jpeg_that_reaches_decoding_is_named_by_decode_image(cub):
    real_jpeg = _noisy_jpeg()
    (cub / FIRST_IMAGE).write_bytes(real_jpeg[: len(real_jpeg) // 2])
    train = load_cub(cub)["train"]
    assert train["image_id"][0] == "001.Black_footed_Albatross/Black_footed_Albatross_0001"
    with pytest.raises(OSError):  # datasets' lazy decoding: PIL's message, which names no file
        train[0]["image"]
    undecoded = train.cast_column("image", datasets.Image(decode=False))[0]
    with pytest.raises(DatasetLayoutError, match=r"Black_footed_Albatross_0001\.jpg: image does not decode: .*"
                                                 r"\(image 001\.Black_footed_Albatross/Black_footed_Albatross_0001\)"):
        decode_image(undecoded["image"], undecoded["image_id"])
    assert decode_image(train.cast_column("image", datasets.Image(decode=False))[1]["image"]).size == (8, 8)


def _noisy_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------- captions
def test_missing_caption_file_is_an_error_or_a_reported_skip(cub):
    (cub / FIRST_CAPTIONS).unlink()
    with pytest.raises(DatasetLayoutError, match=r"Black_footed_Albatross_0001\.txt: caption file not found"):
        load_cub(cub)
    report = SkipReport()
    assert total_rows(load_cub(cub, skip_bad=True, report=report)) == 11
    assert report.counts() == {"missing caption file": 1}


def test_caption_file_with_nine_lines_names_the_missing_line(cub):
    (cub / FIRST_CAPTIONS).write_text("\n".join(small_cub_captions(1)[:9]) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"0001\.txt:10: has 9 caption line\(s\), expected 10"):
        load_cub(cub)
    assert total_rows(load_cub(cub, captions_per_image=None)) == 12  # explicitly accept any number


def test_empty_line_between_captions_is_an_error_naming_it(cub):
    captions = small_cub_captions(1)
    captions[3] = "   "
    (cub / FIRST_CAPTIONS).write_text("\n".join(captions) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"0001\.txt:4: line 4 is empty"):
        load_cub(cub)


def test_empty_caption_file_is_an_error(cub):
    (cub / FIRST_CAPTIONS).write_text("")
    with pytest.raises(DatasetLayoutError, match=r"0001\.txt:1: has 0 caption line\(s\)"):
        load_cub(cub)


def test_trailing_blank_lines_and_crlf_in_captions_are_fine(cub):
    (cub / FIRST_CAPTIONS).write_bytes(("\r\n".join(small_cub_captions(1)) + "\r\n\r\n").encode())
    row = load_cub(cub)["train"][0]
    assert row["captions"] == small_cub_captions(1)


# ----------------------------------------------------------------------------------------------------- metadata
def test_crlf_metadata_loads_exactly_like_lf_metadata(tmp_path):
    lf = load_cub(write_small_cub(tmp_path / "lf"))
    crlf = load_cub(write_small_cub(tmp_path / "crlf", newline="\r\n"))
    for split in ("train", "test"):
        for column in ("image_id", "label", "captions", "bbox", "parts"):
            assert lf[split][column] == crlf[split][column]
    assert crlf["train"][0]["bbox"] == [1.0, 2.0, 10.0, 20.0]


def test_image_without_a_label_names_images_txt_and_its_line(cub):
    replace_line(cub / "image_class_labels.txt", 5, None)  # image 5's label
    with pytest.raises(DatasetLayoutError, match=r"images\.txt:5: image id 5 has no line in image_class_labels\.txt"):
        load_cub(cub)
    report = SkipReport()
    assert total_rows(load_cub(cub, skip_bad=True, report=report)) == 11
    assert report.counts() == {"image without a label": 1}


def test_label_of_an_unknown_class_names_the_label_line(cub):
    replace_line(cub / "image_class_labels.txt", 2, "2 7")
    with pytest.raises(DatasetLayoutError, match=r"image_class_labels\.txt:2: class id 7 is not in classes\.txt"):
        load_cub(cub)


def test_split_file_naming_an_unknown_image_names_its_line(cub):
    with open(cub / "train_test_split.txt", "a") as handle:
        handle.write("13 1\n")
    with pytest.raises(DatasetLayoutError, match=r"train_test_split\.txt:13: image id 13 is not in images\.txt"):
        load_cub(cub)


def test_split_flag_other_than_0_or_1_names_its_line(cub):
    replace_line(cub / "train_test_split.txt", 3, "3 2")
    with pytest.raises(DatasetLayoutError, match=r"train_test_split\.txt:3: field 2 must be 0 or 1"):
        load_cub(cub)


def test_malformed_part_line_names_its_line_and_skipping_costs_that_image(cub):
    replace_line(cub / "parts" / "part_locs.txt", 20, "2 5 seven 5.0 1")  # image 2, part 5
    with pytest.raises(DatasetLayoutError, match=r"part_locs\.txt:20: expected 5 numbers"):
        load_cub(cub)
    report = SkipReport()
    dataset = load_cub(cub, skip_bad=True, report=report)
    assert report.counts() == {"bad metadata line": 1, "image without part locations": 1}
    assert total_rows(dataset) == 11


def test_bounding_box_line_with_a_missing_field_names_its_line(cub):
    replace_line(cub / "bounding_boxes.txt", 4, "4 1.0 2.0 3.0")
    with pytest.raises(DatasetLayoutError, match=r"bounding_boxes\.txt:4: expected 5 fields, found 4"):
        load_cub(cub)


def test_missing_metadata_file_is_named(cub):
    (cub / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"bounding_boxes\.txt: file not found"):
        load_cub(cub)


def test_a_folder_without_cub_says_what_it_expected(tmp_path):
    with pytest.raises(DatasetLayoutError, match="no images.txt here or in CUB_200_2011/"):
        load_cub(tmp_path)


# ------------------------------------------------------------------------------------------------------ flowers
def test_flowers_text_c10_present_but_a_file_missing_is_an_error(tmp_path):
    folder = write_small_flowers(tmp_path, with_captions=True)
    (folder / "text_c10" / "class_00002" / "image_00005.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"class_00002/image_00005\.txt: caption file not found"):
        load_flowers(folder)


def test_flowers_setid_naming_an_unknown_image_names_the_entry(tmp_path):
    folder = write_small_flowers(tmp_path, setid={"trnid": [1, 4, 7, 10], "valid": [2, 5, 8, 11, 99],
                                                  "tstid": [3, 6, 9, 12]})
    with pytest.raises(DatasetLayoutError, match=r"setid\.mat \[valid\(5\)\]: image number 99 is not in 1\.\.12"):
        load_flowers(folder)
    assert total_rows(load_flowers(folder, "etri2020")) > 0  # etri2020 does not read setid.mat


def test_flowers_image_in_no_split_is_not_dropped_silently(tmp_path):
    folder = write_small_flowers(tmp_path, setid={"trnid": [1, 4, 7, 10], "valid": [2, 5, 8, 11], "tstid": [3, 6, 9]})
    with pytest.raises(DatasetLayoutError, match=r"setid\.mat: image_00012 is in none of trnid, valid, tstid"):
        load_flowers(folder)
    report = SkipReport()
    assert total_rows(load_flowers(folder, skip_bad=True, report=report)) == 11
    assert report.counts() == {"image without a split": 1}


def test_flowers_unknown_label_names_the_entry(tmp_path):
    folder = write_small_flowers(tmp_path, labels=(1, 1, 1, 2, 2, 2, 3, 3, 103, 102, 102, 102))
    with pytest.raises(DatasetLayoutError, match=r"imagelabels\.mat \[labels\(9\)\]: label 103 is not in 1\.\.102"):
        load_flowers(folder)


def test_flowers_jpg_without_a_label_is_reported(tmp_path):
    folder = write_small_flowers(tmp_path)
    (folder / "jpg" / "image_00013.jpg").write_bytes(TINY_JPEG)
    with pytest.raises(DatasetLayoutError, match=r"image_00013\.jpg: imagelabels\.mat labels only images 1\.\.12"):
        load_flowers(folder)


def test_flowers_damaged_mat_file_is_named(tmp_path):
    folder = write_small_flowers(tmp_path)
    (folder / "imagelabels.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetLayoutError, match=r"imagelabels\.mat: cannot read MATLAB file"):
        load_flowers(folder)
    savemat(folder / "imagelabels.mat", {"lbls": np.ones((1, 12), dtype=np.uint8)})
    with pytest.raises(DatasetLayoutError, match=r"imagelabels\.mat: no array 'labels' \(found \['lbls'\]\)"):
        load_flowers(folder)


# ------------------------------------------------------------------------------------------ the command line
def run_prepare_data(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cam_joint.cli", "prepare-data", *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_prepare_data_saves_a_dataset_that_load_from_disk_reads_back(tmp_path):
    cub_parent = tmp_path / "birds"
    write_small_cub(cub_parent, text_location="beside")
    output = tmp_path / "saved"
    result = run_prepare_data("--dataset", "cub", "--data-dir", cub_parent, "--output-dir", output)
    assert result.returncode == 0, result.stderr
    assert "train: 6 images, 3 classes" in result.stdout
    assert "test: 6 images, 3 classes" in result.stdout
    saved = datasets.load_from_disk(str(output))
    assert sorted(saved) == ["test", "train"]
    row = saved["train"][0]
    assert row["captions"] == small_cub_captions(1)
    assert saved["train"].features["label"].names == [name.split(".", 1)[1] for name in SMALL_CUB_CLASSES]
    assert row["image"].size == (8, 8)  # the image bytes travelled with the saved dataset


def test_prepare_data_stops_on_bad_input_and_reports_skips_with_skip_bad(tmp_path, capsys):
    # In-process through the same entry point as the console script (a subprocess costs seconds of imports).
    from cam_joint.cli import main

    folder = write_small_flowers(tmp_path / "flowers")
    (folder / "jpg" / "image_00004.jpg").unlink()
    output = tmp_path / "saved"
    arguments = ["prepare-data", "--dataset", "flowers", "--data-dir", str(folder), "--output-dir", str(output)]
    assert main(arguments) == 1
    assert "image_00004.jpg: image file not found" in capsys.readouterr().err
    assert not output.exists()

    assert main([*arguments, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "train: 3 images, 3 classes" in printed
    assert "1 x missing image file" in printed
    assert "image_00004.jpg: image file not found" in printed
    assert len(datasets.load_from_disk(str(output))["train"]) == 3
