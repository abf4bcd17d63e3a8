"""CamJointProcessor / CamJointImageProcessor / the caption tokenizer: what a user feeds the model.

- image preprocessing is exactly timm's own evaluation transform for the encoder;
- every common PIL mode (L, I;16, RGBA, LA, CMYK, P with and without transparency, ...) gives (3, H, W), also as
  files written and reopened with PIL, from 1x1 to 8000x8000 (time and memory bounded);
- numpy arrays and torch tensors in (H, W, C), (C, H, W) and (H, W) layouts, uint8 / uint16 / bool / float in [0, 1],
  4-D batches and (nested) lists give exactly the pixel values of the same PIL image;
- every bad input (empty list, 0-size image, wrong channel count, NaN, out-of-range values, not an image) is a
  ValueError that names the entry, its type and its shape;
- prompts / training captions are padded by the tokenizer itself (padding_side), exactly as the hand padding was;
- punctuation does not change the ids, decoding gives clean sentences, `text=""` is bos alone;
- save / `AutoProcessor.from_pretrained` round trip (in-process, no remote code needed).
"""

from __future__ import annotations

import logging
import random
import re
import time
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import AutoProcessor

from cam_joint import CamJointImageProcessor, CamJointProcessor, build_caption_tokenizer
from cam_joint.image_processing_cam_joint import UnsupportedImageTypeError, to_rgb

CAPTIONS = [
    "a red crown, black wings.",
    "this bird has a small yellow belly",
    "A blue bird with white wings and a short beak!",
]


@pytest.fixture(scope="module")
def encoder():
    return timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="")


@pytest.fixture(scope="module")
def image_processor(encoder):
    return CamJointImageProcessor.from_data_config(timm.data.resolve_data_config({}, model=encoder))


@pytest.fixture(scope="module")
def tokenizer():
    return build_caption_tokenizer(CAPTIONS)


@pytest.fixture(scope="module")
def processor(image_processor, tokenizer):
    return CamJointProcessor(image_processor, tokenizer)


def _rgb_image(width=97, height=61, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


# ----------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("encoder_name", ["resnet18", "inception_v4"])
def test_preprocessing_equals_timm_eval_transform(encoder_name):
    """Same tensor, bit for bit, as timm's own eval transform for that encoder (size, crop, interpolation, stats)."""
    encoder = timm.create_model(encoder_name, pretrained=False, num_classes=0, global_pool="")
    data_config = timm.data.resolve_data_config({}, model=encoder)
    timm_transform = timm.data.create_transform(**data_config)
    image_processor = CamJointImageProcessor.from_data_config(data_config)
    for image in (_rgb_image(), _rgb_image(width=40, height=300, seed=1)):
        expected = timm_transform(image)
        got = image_processor(image)["pixel_values"]
        assert got.shape == (1, *data_config["input_size"])
        assert torch.equal(got[0], expected)


def test_batch_of_images_and_numpy_output(image_processor):
    images = [_rgb_image(seed=s) for s in range(3)]
    batch = image_processor(images)["pixel_values"]
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    for i, image in enumerate(images):
        assert torch.equal(batch[i], image_processor(image)["pixel_values"][0])
    as_numpy = image_processor(images, return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and np.array_equal(as_numpy, batch.numpy())


def _palette_with_transparency() -> Image.Image:
    indices = np.zeros((30, 40), np.uint8)
    indices[:10] = 1  # the top rows use the transparent palette entry
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.info["transparency"] = 1
    return image


def _sixteen_bit(image: Image.Image) -> Image.Image:
    """A full-range 16-bit grayscale image: the 8-bit gray image scaled by 257 (0 -> 0, 255 -> 65535)."""
    return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)


MODES = {
    "L": lambda im: im.convert("L"),
    "I;16": _sixteen_bit,
    "I": lambda im: im.convert("I"),
    "F": lambda im: im.convert("F"),
    "RGBA": lambda im: im.convert("RGBA"),
    "LA": lambda im: im.convert("LA"),
    "CMYK": lambda im: im.convert("CMYK"),
    "P": lambda im: im.convert("P"),
    "P+transparency": lambda im: _palette_with_transparency(),
    "1": lambda im: im.convert("1"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_any_pil_mode_gives_three_channels(image_processor, mode):
    image = MODES[mode](_rgb_image())
    if mode == "I;16":
        assert image.mode == "I;16"
    pixel_values = image_processor(image)["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224)
    assert torch.isfinite(pixel_values).all()


def test_grayscale_modes_are_gray_and_match_each_other(image_processor):
    """L decodes to the gray RGB image (R = G = B = L)."""
    gray = _rgb_image().convert("L")
    reference = to_rgb(gray)
    assert reference.mode == "RGB"
    array = np.asarray(reference)
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])
    assert np.array_equal(array[..., 0], np.asarray(gray))


def test_integer_modes_decode_exactly():
    """A full-range 16-bit image (8-bit gray x 257) and an 8-bit-valued I image give back the 8-bit gray values."""
    gray = _rgb_image().convert("L")
    for other in (_sixteen_bit(gray), gray.convert("I")):
        assert np.array_equal(np.asarray(to_rgb(other))[..., 0], np.asarray(gray)), other.mode


def test_dark_sixteen_bit_image_stays_dark():
    """A 16-bit image is scaled by its bit depth (65535 -> 255), not stretched to its own maximum: a uniformly dark
    16-bit photo (1000 / 65535) must not come out white."""
    dark = Image.fromarray(np.full((8, 8), 1000, np.uint16))
    assert dark.mode == "I;16"
    value = np.asarray(to_rgb(dark))[0, 0]
    assert value.max() <= 5, f"a 1000/65535 gray became {value.tolist()}"


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (6, 4), (10, 20, 30, 0))  # invisible dark colour under alpha 0
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgb = to_rgb(rgba)
    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (10, 20, 30)
    palette = to_rgb(_palette_with_transparency())
    assert palette.mode == "RGB"
    assert palette.getpixel((0, 0)) == (255, 255, 255)  # transparent palette entry -> white
    assert palette.getpixel((0, 20)) == (0, 0, 0)  # opaque entry keeps its colour
    la = Image.new("LA", (3, 3), (0, 0))
    assert to_rgb(la).getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_and_palette_match_pil_conversion():
    image = _rgb_image()
    for converted in (image.convert("CMYK"), image.convert("P")):
        assert np.array_equal(np.asarray(to_rgb(converted)), np.asarray(converted.convert("RGB")))


def test_arrays_and_tensors_are_accepted(image_processor):
    image = _rgb_image()
    expected = image_processor(image)["pixel_values"]
    array = np.asarray(image)
    assert torch.equal(image_processor(array)["pixel_values"], expected)
    assert torch.equal(image_processor(torch.from_numpy(array.copy()).permute(2, 0, 1))["pixel_values"], expected)
    with pytest.raises(TypeError, match="PIL image"):
        image_processor("not an image")


def _pixels(image_processor, image, **kwargs) -> torch.Tensor:
    return image_processor(image, **kwargs)["pixel_values"]


ARRAY_FORMS = {  # the same 61 x 97 RGB image as users hold it
    "numpy HWC uint8": lambda a: a,
    "numpy CHW uint8": lambda a: a.transpose(2, 0, 1),
    "numpy HWC float32 [0, 1]": lambda a: a.astype(np.float32) / 255,
    "numpy CHW float64 [0, 1]": lambda a: a.transpose(2, 0, 1) / 255.0,
    "numpy HWC float32 [0, 255]": lambda a: a.astype(np.float32),
    "numpy HWC int64": lambda a: a.astype(np.int64),
    "numpy HWC non-contiguous": lambda a: np.ascontiguousarray(a[:, ::-1])[:, ::-1],
    "torch CHW uint8": lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1),
    "torch HWC uint8": lambda a: torch.from_numpy(a.copy()),
    "torch CHW float [0, 1] (ToTensor)": lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255,
    "torch CHW float16 [0, 1]": lambda a: (torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255).half(),
    "torch CHW float requiring grad": lambda a: (torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    .requires_grad_(),
}


@pytest.mark.parametrize("form", list(ARRAY_FORMS))
def test_arrays_and_tensors_in_any_layout_equal_the_pil_image(image_processor, form):
    """(H, W, C) and (C, H, W), uint8 and float in [0, 1] (a uint8 image / 255 comes back exactly): bit for bit the
    pixel values of the PIL image."""
    image = _rgb_image()
    got = _pixels(image_processor, ARRAY_FORMS[form](np.asarray(image)))
    assert torch.equal(got, _pixels(image_processor, image))


def test_bfloat16_tensor_is_accepted(image_processor):
    """numpy has no bfloat16; it goes through float32 (bfloat16 is too coarse for 1/255 steps, so close, not equal)."""
    image = _rgb_image()
    tensor = (torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255).bfloat16()
    got, expected = _pixels(image_processor, tensor), _pixels(image_processor, image)
    assert got.shape == expected.shape and (got - expected).abs().max() < 0.1


def test_batches_lists_and_nested_lists(image_processor):
    images = [_rgb_image(seed=s) for s in range(3)]
    expected = _pixels(image_processor, images)
    arrays = [np.asarray(image) for image in images]
    same = {
        "numpy NHWC batch": np.stack(arrays),
        "torch NCHW batch": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2),
        "tuple": tuple(images),
        "generator": (image for image in images),
        "mixed list": [images[0], arrays[1], torch.from_numpy(arrays[2].copy()).permute(2, 0, 1)],
        "nested lists (one list per sample)": [[images[0]], [images[1], images[2]]],
        "list of batches": [np.stack(arrays[:2]), arrays[2]],
    }
    for form, batch in same.items():
        assert torch.equal(_pixels(image_processor, batch), expected), form


def test_grey_rgba_sixteen_bit_and_bool_arrays_equal_their_pil_modes(image_processor):
    image = _rgb_image()
    gray = np.asarray(image.convert("L"))
    for array in (gray, gray[..., None], gray[None], torch.from_numpy(gray.copy())[None]):
        assert torch.equal(_pixels(image_processor, array), _pixels(image_processor, image.convert("L")))
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[:20, :, 3] = 0  # transparent rows: white, as for a PIL RGBA image
    assert torch.equal(_pixels(image_processor, rgba), _pixels(image_processor, Image.fromarray(rgba)))
    sixteen = gray.astype(np.uint16) * 257
    assert torch.equal(_pixels(image_processor, sixteen), _pixels(image_processor, Image.fromarray(sixteen)))
    assert torch.equal(_pixels(image_processor, gray > 128), _pixels(image_processor, Image.fromarray(gray > 128)))


def test_ambiguous_channel_axis_follows_the_library_and_input_data_format(image_processor, caplog):
    """(3, W, 3): numpy arrays are (H, W, C) (what `np.asarray(pil_image)` gives), tensors (C, H, W) (torchvision);
    `input_data_format` says which explicitly. A 1x1 RGB pixel (1, 1, 3) stays a 1x1 RGB image."""
    array = np.random.default_rng(5).integers(0, 256, (3, 7, 3), dtype=np.uint8)
    as_hwc = _pixels(image_processor, Image.fromarray(array))
    as_chw = _pixels(image_processor, Image.fromarray(array.transpose(1, 2, 0)))
    with caplog.at_level(logging.WARNING):
        assert torch.equal(_pixels(image_processor, array), as_hwc)
    assert "ambiguous" in caplog.text and "(3, 7, 3)" in caplog.text
    assert torch.equal(_pixels(image_processor, torch.from_numpy(array)), as_chw)
    assert torch.equal(_pixels(image_processor, array, input_data_format="channels_first"), as_chw)
    assert torch.equal(_pixels(image_processor, torch.from_numpy(array), input_data_format="channels_last"), as_hwc)
    pixel = np.array([[[10, 200, 30]]], np.uint8)
    assert torch.equal(_pixels(image_processor, pixel), _pixels(image_processor, Image.fromarray(pixel)))
    with pytest.raises(ValueError, match="channels_first"):
        image_processor(array, input_data_format="channels_middle")


def test_unknown_keyword_arguments_are_reported_not_silently_ignored(image_processor, caplog):
    """`size=` / `do_resize=` of other image processors do nothing here: the encoder's timm data config decides."""
    image = _rgb_image()
    with caplog.at_level(logging.WARNING):
        got = _pixels(image_processor, image, size={"height": 64, "width": 64}, do_resize=True)
    assert torch.equal(got, _pixels(image_processor, image))
    assert "ignores ['do_resize', 'size']" in caplog.text


_IMAGE = np.zeros((6, 5, 3), np.uint8)
BAD_IMAGES = {  # input -> (words the message must contain)
    "empty list": ([], ["images is empty", "list"]),
    "empty tuple": ((), ["images is empty"]),
    "empty batch": (np.zeros((0, 3, 8, 8), np.uint8), ["images is empty", "(0, 3, 8, 8)"]),
    "None": (None, ["images is None"]),
    "0x0 PIL image": (Image.new("RGB", (0, 0)), ["0-size", "size 0x0"]),
    "0x5 PIL image": (Image.new("L", (0, 5)), ["0-size", "mode L", "0x5"]),
    "0-size array": (np.zeros((0, 5, 3), np.uint8), ["0-size", "(0, 5, 3)"]),
    "0-size tensor": (torch.zeros(3, 0, 5), ["0-size", "torch.Tensor", "(3, 0, 5)"]),
    "2 channels": (np.zeros((6, 5, 2), np.uint8), ["channel", "(6, 5, 2)"]),
    "5 channels": (np.zeros((5, 6, 7), np.uint8), ["channel", "(5, 6, 7)"]),
    "2 channels, said to be first": ((np.zeros((2, 6, 5), np.uint8), "channels_first"), ["2 channels", "(2, 6, 5)"]),
    "1-D": (np.zeros(7), ["dimensions", "(7,)"]),
    "5-D": (np.zeros((1, 1, 3, 4, 4)), ["dimensions", "(1, 1, 3, 4, 4)"]),
    "NaN": (np.full((6, 5, 3), np.nan, np.float32), ["NaN", "(6, 5, 3)", "float32"]),
    "one NaN in [0, 1]": (np.where(np.arange(90).reshape(6, 5, 3) == 7, np.nan, 0.5), ["NaN", "float64"]),
    "NaN tensor": (torch.full((3, 6, 5), float("nan")), ["NaN", "torch.Tensor", "(3, 6, 5)"]),
    "infinite": (np.full((6, 5, 3), np.inf), ["infinite", "(6, 5, 3)"]),
    "normalised pixel_values": (torch.randn(3, 8, 8), ["[0, 1]", "normalised", "(3, 8, 8)"]),
    "just above [0, 1]": (np.linspace(0, 1.02, 90).reshape(6, 5, 3), ["just above [0, 1]", "clip"]),
    "negative integers": (_IMAGE.astype(np.int16) - 1, ["[-1, -1]", "int16"]),
    "integers above 16 bit": (_IMAGE.astype(np.int64) + 70000, ["70000", "0-65535"]),
    "complex": (np.zeros((6, 5, 3), complex), ["dtype complex128"]),
    "strings": (np.full((6, 5, 3), "a"), ["unsupported dtype"]),
    "0x3 16-bit PIL image": (Image.new("I;16B", (0, 3)), ["0-size", "mode I;16B"]),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_raise_a_value_error_naming_the_input(image_processor, case):
    value, words = BAD_IMAGES[case]
    kwargs = {}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        value, kwargs = value[0], {"input_data_format": value[1]}
    with pytest.raises(ValueError) as raised:
        image_processor(value, **kwargs)
    message = str(raised.value)
    for word in words:
        assert word in message, (case, message)


@pytest.mark.parametrize("value", ["bird.jpg", b"\xff\xd8", {"image": 1}, 3, object(), [_rgb_image(), None],
                                   [[_rgb_image(), "x"]]])
def test_non_images_raise_a_type_and_value_error(image_processor, value):
    """Not an image at all: both a ValueError (as Transformers' image processors raise) and a TypeError (as this
    processor always raised), naming the entry and its type."""
    with pytest.raises(UnsupportedImageTypeError) as raised:
        image_processor(value)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    message = str(raised.value)
    assert "PIL image" in message
    if isinstance(value, list):
        assert "images[1]" in message or "images[0][1]" in message, message
    if isinstance(value, str):
        assert "Image.open" in message


def test_unreadable_files_raise_a_value_error_naming_the_file(image_processor, tmp_path):
    path = tmp_path / "truncated.jpg"
    _rgb_image(width=300, height=200).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.jpg"):
        image_processor(Image.open(path))
    with Image.open(path) as image:
        pass
    with pytest.raises(ValueError, match="closed"):
        image_processor(image)


def test_processor_refuses_empty_images_and_mismatched_texts(processor):
    with pytest.raises(ValueError, match="images is empty"):
        processor(images=[], text="")
    images = [_rgb_image(seed=s) for s in range(3)]
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        processor(images=images, text=["", "a red crown"])
    one_prompt = processor(images=images, text="a red crown")["input_ids"]  # a single string: every image's prompt
    assert one_prompt.tolist() == processor(images=images, text=["a red crown"] * 3)["input_ids"].tolist()
    with pytest.raises(ValueError, match="return_tensors"):
        processor(images=images, return_tensors="tf")


# ------------------------------------------------------------------------------- image files, as users have them
def _save(image: Image.Image, path, **kwargs) -> Image.Image:
    """Write with PIL and open again (lazily, as users do)."""
    image.save(path, **kwargs)
    return Image.open(path)


def _half_transparent(mode: str) -> Image.Image:
    image = _rgb_image().convert(mode)
    alpha = np.full((image.height, image.width), 255, np.uint8)
    alpha[:20] = 0
    image.putalpha(Image.fromarray(alpha))
    return image


FILES = {  # name -> (writes the file and opens it, the mode it must open in)
    "CMYK JPEG": (lambda d: _save(_rgb_image().convert("CMYK"), d / "cmyk.jpg", quality=95), "CMYK"),
    "RGBA PNG": (lambda d: _save(_half_transparent("RGBA"), d / "rgba.png"), "RGBA"),
    "L PNG": (lambda d: _save(_rgb_image().convert("L"), d / "l.png"), "L"),
    "LA PNG": (lambda d: _save(_half_transparent("LA"), d / "la.png"), "LA"),
    "P PNG with transparency": (lambda d: _save(_palette_with_transparency(), d / "p.png", transparency=1), "P"),
    "I;16 PNG": (lambda d: _save(_sixteen_bit(_rgb_image()), d / "sixteen.png"), "I;16"),
    "1x1 RGB PNG": (lambda d: _save(Image.new("RGB", (1, 1), (200, 30, 90)), d / "one.png"), "RGB"),
    "1x1 L JPEG": (lambda d: _save(Image.new("L", (1, 1), 77), d / "one.jpg"), "L"),
    "1x1 RGBA PNG": (lambda d: _save(Image.new("RGBA", (1, 1), (200, 30, 90, 0)), d / "one_rgba.png"), "RGBA"),
}


@pytest.mark.parametrize("name", list(FILES))
def test_image_files_of_every_mode_work(image_processor, tmp_path, name):
    write, mode = FILES[name]
    image = write(tmp_path)
    assert image.mode == mode  # the file really is of the mode under test
    pixel_values = _pixels(image_processor, image)
    assert pixel_values.shape == (1, 3, 224, 224) and torch.isfinite(pixel_values).all()
    rgb = to_rgb(Image.open(image.filename))
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert torch.equal(pixel_values, _pixels(image_processor, rgb))  # = timm's transform of the decoded RGB image


def test_image_files_decode_to_the_right_colours(tmp_path):
    """Transparent pixels are white, 16-bit equals the 8-bit gray image, CMYK equals Pillow's own conversion."""
    for name in ("RGBA PNG", "LA PNG", "P PNG with transparency"):
        rgb = np.asarray(to_rgb(FILES[name][0](tmp_path)))
        assert (rgb[:10] == 255).all(), name  # the transparent top rows
        assert not (rgb[25:] == 255).all(), name
    gray = np.asarray(_rgb_image().convert("L"))
    assert np.array_equal(np.asarray(to_rgb(FILES["I;16 PNG"][0](tmp_path)))[..., 0], gray)
    cmyk = FILES["CMYK JPEG"][0](tmp_path)
    assert np.array_equal(np.asarray(to_rgb(cmyk)), np.asarray(Image.open(cmyk.filename).convert("RGB")))
    assert to_rgb(FILES["1x1 RGBA PNG"][0](tmp_path)).getpixel((0, 0)) == (255, 255, 255)


def test_one_pixel_image_equals_timm_and_is_uniform(image_processor):
    image = Image.new("RGB", (1, 1), (200, 30, 90))
    pixel_values = _pixels(image_processor, image)[0]
    assert torch.equal(pixel_values, image_processor.transform(image))
    assert (pixel_values == pixel_values[:, :1, :1]).all()  # one colour everywhere


def _memory_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024


def _peak_memory_increase(function):
    """(function(), the peak resident memory it added in MB); None for the memory where Linux's /proc is absent."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets this process's peak (VmHWM) to its current resident size
        before = _memory_mb("VmRSS")
    except OSError:
        return function(), None
    result = function()
    return result, _memory_mb("VmHWM") - before


@pytest.mark.slow
def test_8000x8000_photo_works_in_bounded_time_and_memory(image_processor, tmp_path):
    """A 64 MP JPEG opens without Pillow's decompression-bomb warning (its limit is 89.5 MP) and is processed with
    little more memory than its decoded pixels (8000 x 8000 x 4 bytes in PIL = 244 MB; measured ~265 MB and ~1-2 s
    on 1 thread), not whole-image float copies (1.5 GB for float64)."""
    blocks = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8))
    blocks.resize((8000, 8000), Image.Resampling.NEAREST).save(tmp_path / "big.jpg", quality=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(tmp_path / "big.jpg")
    start = time.perf_counter()
    pixel_values, added_mb = _peak_memory_increase(lambda: _pixels(image_processor, image))
    seconds = time.perf_counter() - start
    assert pixel_values.shape == (1, 3, 224, 224) and torch.isfinite(pixel_values).all()
    assert seconds < 60, f"an 8000x8000 JPEG took {seconds:.1f} s"
    if added_mb is not None:
        assert added_mb < 1024, f"an 8000x8000 JPEG added {added_mb:.0f} MB of peak memory"


def test_extreme_strip_is_refused_before_resizing_like_a_decompression_bomb(monkeypatch, caplog):
    """timm's center-crop resize scales the shorter side to 256 (224 / 0.875): a 1 x 8000 strip would become
    256 x 2,048,000 (2 GB). Above PIL.Image.MAX_IMAGE_PIXELS it warns, above twice it raises at once, as Pillow does
    for files."""
    image_processor = CamJointImageProcessor()
    assert image_processor.resized_size(8000, 8000) == (256, 256)
    assert image_processor.resized_size(1, 8000) == (256, 2048000)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"1x8000 image is resized to 256x2048000 .*MAX_IMAGE_PIXELS"):
        image_processor(Image.new("RGB", (1, 8000)))
    assert time.perf_counter() - start < 1  # refused before any pixel is resized
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    with caplog.at_level(logging.WARNING):
        assert _pixels(image_processor, Image.new("RGB", (2, 1))).shape == (1, 3, 224, 224)  # 512 x 256 = 131072
    assert "512x256" in caplog.text
    with pytest.raises(ValueError, match="twice"):
        image_processor(Image.new("RGB", (4, 1)))  # 1024 x 256 = 262144 > 2 x 100000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's "no limit"
    assert _pixels(image_processor, Image.new("RGB", (4, 1))).shape == (1, 3, 224, 224)


# -------------------------------------------------------------------------------------------- tokenizer
def test_punctuation_and_case_do_not_change_ids(tokenizer):
    with_punctuation = tokenizer("a red crown, black wings.")["input_ids"]
    without = tokenizer("a red crown black wings")["input_ids"]
    assert with_punctuation == without
    assert tokenizer("A Red CROWN;  black   wings!")["input_ids"] == without
    assert with_punctuation[0] == tokenizer.bos_token_id and with_punctuation[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in with_punctuation


def test_special_token_ids_match_config_defaults(tokenizer):
    from cam_joint import CamJointConfig

    config = CamJointConfig()
    assert tokenizer.pad_token_id == config.pad_token_id
    assert tokenizer.bos_token_id == config.bos_token_id
    assert tokenizer.eos_token_id == config.eos_token_id
    assert tokenizer.unk_token_id == config.unk_token_id


def test_batch_decode_gives_clean_sentences(processor):
    ids = processor.encode_captions(["a red crown, black wings.", "this bird"])
    assert ids[1, -1].item() == processor.tokenizer.pad_token_id  # right-padded
    decoded = processor.batch_decode(ids, skip_special_tokens=True)
    assert decoded == ["a red crown black wings", "this bird"]
    assert processor.decode(ids[1], skip_special_tokens=True) == "this bird"
    # generate()-style output: bos, words, eos, then padding
    generated = torch.tensor([[1, *processor.tokenizer("this bird")["input_ids"][1:], 0, 0]])
    assert processor.batch_decode(generated, skip_special_tokens=True) == ["this bird"]


def test_unknown_words_map_to_unk(tokenizer):
    ids = tokenizer("a purple bird")["input_ids"]
    assert tokenizer.unk_token_id in ids


def test_empty_text_is_bos_alone(processor, tokenizer):
    assert processor(text="")["input_ids"].tolist() == [[tokenizer.bos_token_id]]
    prompts = processor(text=["", "a red crown"])["input_ids"]
    pad, bos = tokenizer.pad_token_id, tokenizer.bos_token_id
    assert prompts.tolist() == [[pad, pad, pad, bos], [bos, *tokenizer("a red crown")["input_ids"][1:-1]]]


def test_encode_captions_raises_on_too_long(processor):
    with pytest.raises(ValueError, match="max_length"):
        processor.encode_captions(["a red crown black wings"], max_length=4)


def test_processor_images_and_text_together(processor, image_processor):
    image = _rgb_image()
    out = processor(images=image, text="")
    assert set(out) == {"pixel_values", "input_ids"}
    assert torch.equal(out["pixel_values"], image_processor(image)["pixel_values"])
    with pytest.raises(ValueError):
        processor()


def _hand_padded(sequences: list[list[int]], pad: int, left: bool) -> list[list[int]]:
    """The processor's former home-made padding, kept as the reference the tokenizer's padding must equal."""
    length = max(len(ids) for ids in sequences)
    return [([pad] * (length - len(ids)) + ids) if left else (ids + [pad] * (length - len(ids))) for ids in sequences]


def test_tokenizer_padding_equals_the_former_hand_padding(processor, tokenizer):
    rng = random.Random(0)
    words = "a red crown black wings bird , . ! purple <eos> <pad> 's".split() + ["", "  "]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for _ in range(100):
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 4))]
        encoded = tokenizer(texts)["input_ids"]
        prompts = _hand_padded([ids[:-1] if ids and ids[-1] == eos else ids for ids in encoded], pad, left=True)
        got = processor(text=texts)["input_ids"]
        assert got.dtype == torch.long and got.tolist() == prompts, texts
        captions = processor.encode_captions(texts)
        assert captions.dtype == torch.long and captions.tolist() == _hand_padded(encoded, pad, left=False), texts


def test_padding_side_does_not_depend_on_the_tokenizer_setting(image_processor):
    """A tokenizer saved with padding_side="left" still gives right-padded captions and left-padded prompts."""
    tokenizer = build_caption_tokenizer(CAPTIONS)
    reference = CamJointProcessor(image_processor, build_caption_tokenizer(CAPTIONS))
    for side in ("left", "right"):
        tokenizer.padding_side = side
        processor = CamJointProcessor(image_processor, tokenizer)
        texts = ["", "a red crown black wings"]
        assert torch.equal(processor.encode_captions(texts), reference.encode_captions(texts))
        assert torch.equal(processor(text=texts)["input_ids"], reference(text=texts)["input_ids"])


def test_text_inputs_are_checked(processor, tokenizer):
    assert processor.encode_captions("a red crown").tolist() == [tokenizer("a red crown")["input_ids"]]
    numpy_ids = processor(text=["", "a red crown"], return_tensors="np")["input_ids"]
    assert isinstance(numpy_ids, np.ndarray)
    assert numpy_ids.tolist() == processor(text=["", "a red crown"])["input_ids"].tolist()
    for bad, words in (([], "empty"), ([None], "captions[0]"), (["a", 3], "captions[1] must be a string, got int"),
                       (None, "NoneType")):
        with pytest.raises(ValueError, match=re.escape(words)):
            processor.encode_captions(bad)
    with pytest.raises(ValueError, match="text is an empty list"):
        processor(text=[])


# ------------------------------------------------------------------------------------------- round trip
def test_save_and_auto_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "CamJointProcessor"
    assert type(loaded.image_processor).__name__ == "CamJointImageProcessor"
    assert loaded.image_processor.data_config() == processor.image_processor.data_config()
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    image = _rgb_image()
    for text in ("", "a red crown, black wings."):
        a, b = processor(images=image, text=text), loaded(images=image, text=text)
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["input_ids"], b["input_ids"])
    ids = processor.encode_captions(CAPTIONS)
    assert torch.equal(loaded.encode_captions(CAPTIONS), ids)
    assert loaded.batch_decode(ids, skip_special_tokens=True) == processor.batch_decode(ids, skip_special_tokens=True)


def test_batched_prompts_of_different_lengths_generate_as_one_by_one(processor):
    from cam_joint import CamJointConfig, CamJointModel

    config = CamJointConfig(encoder_name="resnet18", intermediate_size=16, hidden_size=16, word_embedding_size=8,
                            vocab_size=len(processor.tokenizer), num_labels=3, max_caption_length=12)
    torch.manual_seed(0)
    model = CamJointModel(config).eval()
    with torch.no_grad():  # larger head weights, so that a wrong LSTM state shows in the tokens
        g = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder.") and parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 2.0 / parameter.shape[1] ** 0.5)
    images = [_rgb_image(seed=3), _rgb_image(seed=4)]
    prompts = ["", "a red crown"]
    batched = model.generate(**processor(images=images, text=prompts), max_new_tokens=4)
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        alone = model.generate(**processor(images=image, text=prompt), max_new_tokens=4)[0]
        assert batched[row, -alone.shape[0]:].tolist() == alone.tolist(), prompt
