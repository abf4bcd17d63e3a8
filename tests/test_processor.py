"""CamJointProcessor / CamJointImageProcessor / the caption tokenizer: what a user feeds the model.

- image preprocessing is exactly timm's own evaluation transform for the encoder;
- every common PIL mode (L, I;16, RGBA, LA, CMYK, P with and without transparency, ...) gives (3, H, W);
- punctuation does not change the ids, decoding gives clean sentences, `text=""` is bos alone;
- save / `AutoProcessor.from_pretrained` round trip (in-process, no remote code needed).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import AutoProcessor

from cam_joint import CamJointImageProcessor, CamJointProcessor, build_caption_tokenizer
from cam_joint.image_processing_cam_joint import to_rgb

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
