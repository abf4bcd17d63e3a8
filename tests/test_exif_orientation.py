"""EXIF orientation: a JPEG stored rotated / mirrored with its Orientation tag (1-8) is read upright everywhere.

Each file stores the pixels of one upright picture transformed as the tag says a camera stored them; reading it must
give the upright picture back. Two references: the stored JPEG's own decoded pixels transformed by numpy as the EXIF
specification describes (equal exactly: transposing decoded pixels is lossless), and the upright original (close,
within JPEG's error, and far from what the stored pixels look like untransposed).
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from data_layouts import write_small_cub
from PIL import Image

from cam_joint import CamJointImageProcessor
from cam_joint.data import decode_image, load_cub
from cam_joint.data.feature_cache import FeatureCache, feature_key
from cam_joint.image_processing_cam_joint import ORIENTATION_TAG, exif_upright
from cam_joint.inference import load_image
from cam_joint.prediction import predict_batch

# How a camera stores the upright picture for each tag (the EXIF specification's row/column meaning of tags 1-8);
# each is the inverse of what a viewer applies.
STORED_FROM_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, 1),  # shown rotated 90 degrees clockwise: stored 90 degrees counter-clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, -1),
}
UPRIGHT_FROM_STORED = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
                       5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
                       7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def upright_picture() -> np.ndarray:
    """64 wide x 32 high, four differently coloured quadrants: every flip and rotation of it looks different."""
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:16, :32] = (220, 30, 30)
    picture[:16, 32:] = (30, 200, 40)
    picture[16:, :32] = (40, 40, 210)
    picture[16:, 32:] = (230, 220, 40)
    return picture


def jpeg_bytes(pixels: np.ndarray, orientation: int | None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION_TAG] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=95, subsampling=0, exif=exif)
    return buffer.getvalue()


def stored_jpeg(orientation: int) -> bytes:
    return jpeg_bytes(STORED_FROM_UPRIGHT[orientation](upright_picture()), orientation)


def exact_upright(data: bytes, orientation: int) -> np.ndarray:
    """The stored file's decoded pixels, transformed by numpy (not by PIL) as the tag says."""
    with Image.open(io.BytesIO(data)) as image:
        return np.ascontiguousarray(UPRIGHT_FROM_STORED[orientation](np.asarray(image.convert("RGB"))))


def assert_upright(pixels: np.ndarray, data: bytes, orientation: int) -> None:
    np.testing.assert_array_equal(pixels, exact_upright(data, orientation))
    picture = upright_picture().astype(float)
    assert np.abs(pixels.astype(float) - picture).mean() < 6  # JPEG's error only
    if orientation != 1:  # and the untransposed pixels would have been wrong
        stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)
        assert stored.shape != picture.shape or np.abs(stored - picture).mean() > 50


@pytest.fixture(scope="module")
def oriented_files(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("exif")
    paths = {}
    for orientation in range(1, 9):
        paths[orientation] = folder / f"orientation_{orientation}.jpg"
        paths[orientation].write_bytes(stored_jpeg(orientation))
    return paths


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_and_the_processor_read_each_orientation_upright(oriented_files, orientation):
    path = oriented_files[orientation]
    data = path.read_bytes()
    assert_upright(np.asarray(load_image(path)), data, orientation)
    with Image.open(path) as opened:  # a user's own Image.open, straight into the processor
        upright = exif_upright(opened)
        assert_upright(np.asarray(upright), data, orientation)
        processor = CamJointImageProcessor.from_data_config(
            {"input_size": (3, 32, 64), "crop_pct": 1.0, "interpolation": "bilinear",
             "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
        from_file = processor(opened, return_tensors="pt")["pixel_values"]
    reference = processor(Image.fromarray(exact_upright(data, orientation)), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_file, reference, rtol=0, atol=0)


def test_an_upright_image_is_returned_as_it_is():
    image = Image.open(io.BytesIO(jpeg_bytes(upright_picture(), None)))
    assert exif_upright(image) is image
    tagged = Image.open(io.BytesIO(stored_jpeg(1)))
    assert exif_upright(tagged) is tagged
    turned = exif_upright(Image.open(io.BytesIO(stored_jpeg(6))))
    assert exif_upright(turned) is turned  # the tag is gone: a second call changes nothing


def test_predict_batch_on_a_phone_photo_equals_the_upright_picture(oriented_files):
    from cam_joint import CamJointConfig, CamJointModel

    torch.manual_seed(0)
    model = CamJointModel(CamJointConfig(variant="cnn", encoder_name="resnet10t", num_labels=3)).eval()
    processor = CamJointImageProcessor.from_data_config({**model.encoder_data_config(), "input_size": (3, 64, 64),
                                                         "crop_pct": 1.0})
    for orientation in (3, 6, 8):
        data = oriented_files[orientation].read_bytes()
        with torch.no_grad():
            got = predict_batch(model, processor, [load_image(oriented_files[orientation])]).logits
            want = predict_batch(model, processor, [Image.fromarray(exact_upright(data, orientation))]).logits
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _cub_with_phone_photos(parent: Path) -> tuple[Path, list[Path]]:
    """The small CUB layout with each training image replaced by a JPEG stored with orientation 6 or 8."""
    root = write_small_cub(parent)
    photos = sorted((root / "images").rglob("*.jpg"))
    for k, photo in enumerate(photos):
        photo.write_bytes(stored_jpeg(6 if k % 2 else 8))
    return root, photos


def test_the_cub_loader_and_decode_image_give_upright_rows(tmp_path):
    root, _ = _cub_with_phone_photos(tmp_path)
    split = load_cub(root)["train"]
    assert len(split) > 0
    undecoded = split.cast_column("image", datasets.Image(decode=False))
    for row, raw in zip(split, undecoded):
        orientation = Image.open(raw["image"]["path"]).getexif()[ORIENTATION_TAG]
        data = Path(raw["image"]["path"]).read_bytes()
        assert_upright(np.asarray(row["image"].convert("RGB")), data, orientation)  # datasets' lazy decoding
        assert_upright(np.asarray(decode_image(raw["image"], row["image_id"]).convert("RGB")), data, orientation)


def test_cached_features_follow_the_upright_pixels(tmp_path):
    """The feature cache encodes what the processor sees (upright), and its key's format says so: features cached
    before images were turned upright (format 1) are never returned."""
    root, photos = _cub_with_phone_photos(tmp_path / "phone")
    upright_root = write_small_cub(tmp_path / "upright")
    for photo in sorted((upright_root / "images").rglob("*.jpg")):
        photo.write_bytes(jpeg_bytes(upright_picture(), None))
    processor = CamJointImageProcessor.from_data_config(
        {"input_size": (3, 32, 64), "crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.5,) * 3,
         "std": (0.5,) * 3})

    def encode(rows):  # the pixels themselves as "features", (B, 3, 4, 8) after pooling
        return torch.nn.functional.avg_pool2d(processor(rows["image"], return_tensors="pt")["pixel_values"], 8)

    features = {}
    for name, folder in (("phone", root), ("upright", upright_root)):
        split = load_cub(folder)["train"]
        key = feature_key("pixels", "none", processor.data_config(), dataset=split, split=name)
        assert key["format_version"] >= 2
        features[name] = FeatureCache(tmp_path / "cache").get_or_compute(key, split, encode)
    assert features["phone"].shape == features["upright"].shape
    torch.testing.assert_close(features["phone"].float(), features["upright"].float(), rtol=0, atol=0.05)
