"""Image preprocessing of CamJoint: exactly the timm encoder's own evaluation transform (its data config).

Every image a user hands over (a PIL image of any mode, a numpy array or a torch tensor laid out (H, W, C), (C, H, W)
or (H, W), a 4-D batch of those, or a list of any of them) is first turned into an 8-bit RGB PIL image by `to_rgb`,
then goes through timm's transform. A PIL image whose EXIF orientation tag says it is stored rotated or mirrored (a
phone's portrait photo: tag 6) is first turned upright by `exif_upright`, as Transformers' `load_image` does. An
ordinary RGB PIL image reaches timm untouched, so the output is bit for bit timm's own. Anything that is not an image gets a `ValueError` that names the entry, its type and its shape / mode.

This file ships next to every checkpoint as remote code: it imports only numpy, PIL, torch, timm and transformers.
"""

from __future__ import annotations

import math
import os

import numpy as np
import timm.data
import torch
from PIL import Image, ImageOps
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_transforms import to_channel_dimension_format
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format, is_scaled_image
from transformers.utils import logging

logger = logging.get_logger(__name__)

# What an array can hold: grey, RGB, RGBA (alpha is composited on white, as for PIL images).
CHANNEL_COUNTS = (1, 3, 4)
# Float images with values in (1, AMBIGUOUS_FLOAT_MAX] are refused: a [0, 1] image with resampling overshoot and a
# (nearly black) [0, 255] image look the same there, and guessing wrong silently gives a black or a white image.
AMBIGUOUS_FLOAT_MAX = 2.0
# EXIF's Orientation tag (0x0112): 1 upright, 2-8 the stored pixels are mirrored and/or rotated.
ORIENTATION_TAG = 0x0112
# Large float / 16-bit arrays are converted a band of rows at a time, so that the temporary float copy stays small
# (an 8000 x 8000 RGB float32 array is 768 MB; a whole-array float64 copy would be 1.5 GB more).
_ROWS_PER_CHUNK = 256


class UnsupportedImageTypeError(TypeError, ValueError):
    """An `images` entry that is not an image at all (a path, None, a dict, ...).

    Both a `ValueError`, which is what Transformers' image processors raise for an invalid image type, and a
    `TypeError`, which is what Python raises for a wrong type and what this processor raised before.
    """


def _describe(image) -> str:
    """`numpy.ndarray of shape (3, 4) and dtype float32`, `PIL image of mode RGB and size 0x0`, `str`."""
    if isinstance(image, Image.Image):
        return f"PIL image of mode {image.mode} and size {image.width}x{image.height}"
    if isinstance(image, (np.ndarray, torch.Tensor)):
        kind = "numpy.ndarray" if isinstance(image, np.ndarray) else "torch.Tensor"
        return f"{kind} of shape {tuple(image.shape)} and dtype {image.dtype}"
    module = type(image).__module__
    return type(image).__qualname__ if module == "builtins" else f"{module}.{type(image).__qualname__}"


def _type_error(image, name: str) -> UnsupportedImageTypeError:
    is_path = isinstance(image, (str, os.PathLike))
    hint = " (a file path or URL: open it first, e.g. with `PIL.Image.open(path)`)" if is_path else ""
    return UnsupportedImageTypeError(f"{name}: expected a PIL image, numpy array or torch tensor, got "
                                     f"{_describe(image)}{hint}")


def exif_upright(image: Image.Image) -> Image.Image:
    """The image as it is displayed: rotated / mirrored by its EXIF orientation tag (2-8), which is then dropped.

    Every place this project opens an image file goes through this (the processor's `to_rgb`, `load_image`, the data
    loaders' `decode_image`), so the model sees what a viewer shows. An image without the tag or with tag 1 is returned
    as it is (no copy); a transposed image has no tag, so calling this twice changes nothing.
    """
    if image.getexif().get(ORIENTATION_TAG, 1) in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _is_single_image(image) -> bool:
    return isinstance(image, (Image.Image, np.ndarray, torch.Tensor))


def _channel_format(array: np.ndarray, input_data_format, channels_first: bool, name: str,
                    description: str) -> ChannelDimension:
    """Where the channels of a 3-D array are, as Transformers' image processors infer it.

    `infer_channel_dimension_format` decides when only one end of the shape is a plausible channel count. When both
    are (a (3, H, 3) or (1, 1, 3) array) it would say "first"; here the layout the array's own library uses wins
    instead: numpy arrays are (H, W, C) as `np.asarray(pil_image)` gives them, torch tensors (C, H, W) as torchvision
    gives them, which is also what this processor always assumed. `input_data_format` settles it explicitly.
    """
    if input_data_format is not None:
        input_data_format = ChannelDimension(input_data_format)
        channels = array.shape[0] if input_data_format == ChannelDimension.FIRST else array.shape[-1]
        if channels not in CHANNEL_COUNTS:
            raise ValueError(f"{name}: {description} has {channels} channels on its "
                             f"{input_data_format.value} axis; expected 1 (grey), 3 (RGB) or 4 (RGBA)")
        return input_data_format
    first, last = array.shape[0] in CHANNEL_COUNTS, array.shape[-1] in CHANNEL_COUNTS
    if not (first or last):
        raise ValueError(f"{name}: {description} has no channel axis: expected 1 (grey), 3 (RGB) or 4 (RGBA) "
                         f"channels, first (C, H, W) or last (H, W, C)")
    if first and last:
        logger.warning_once(
            f"{name}: the channel axis of {description} is ambiguous; taking it as "
            f"{'(C, H, W)' if channels_first else '(H, W, C)'}. Pass input_data_format='channels_first' or "
            f"'channels_last' to say which.")
        return ChannelDimension.FIRST if channels_first else ChannelDimension.LAST
    return infer_channel_dimension_format(array, num_channels=CHANNEL_COUNTS)


def _in_row_chunks(array: np.ndarray, convert) -> np.ndarray:
    """`convert` applied to bands of rows of an (H, W[, C]) array, giving uint8: bounded temporary memory."""
    out = np.empty(array.shape, np.uint8)
    for start in range(0, array.shape[0], _ROWS_PER_CHUNK):
        out[start:start + _ROWS_PER_CHUNK] = convert(array[start:start + _ROWS_PER_CHUNK])
    return out


def _sixteen_to_eight_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by bit depth (65535 / 257 = 255), rounded to nearest: dark stays dark.

    Integer arithmetic gives exactly `rint(values / 257)` (257 is odd, so there are no ties) without a float copy.
    """
    return ((np.clip(values, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_uint8(array: np.ndarray, name: str, description: str) -> np.ndarray:
    """Pixel values -> uint8, by the conventions of Transformers' image processors.

    uint8 stays; bool is 0 / 255; uint16 is 16-bit (scaled by bit depth); other integers are 0-255 values, or 16-bit
    ones when they exceed 255 (as PIL's 32-bit "I" mode); floats are [0, 1] when `is_scaled_image` says so (rounded
    after x 255, so a uint8 image divided by 255 comes back exactly), else 0-255 values.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(f"{name}: {description} has values in [{low}, {high}]; integer images must hold 0-255 "
                             f"(8-bit) or 0-65535 (16-bit) values")
        if array.dtype == np.uint16 or high > 255:
            return _in_row_chunks(array, _sixteen_to_eight_bit)
        return array.astype(np.uint8)
    # float16 is upcast so that x 255 keeps whole grey levels; float64 keeps its precision
    work_dtype = np.float64 if array.dtype == np.float64 else np.float32
    if is_scaled_image(array):  # min >= 0 and max <= 1 (never true with a NaN: NaN compares false)
        def scale(rows):
            rows = np.multiply(rows, 255.0, dtype=work_dtype)  # one temporary per band
            return np.clip(np.rint(rows, out=rows), 0, 255, out=rows)

        return _in_row_chunks(array, scale)
    low, high = float(array.min()), float(array.max())  # NaN propagates through min / max
    if np.isnan(low) or np.isnan(high):
        raise ValueError(f"{name}: {description} contains NaN values")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name}: {description} contains infinite values (range [{low}, {high}])")
    if low < 0 or high > 255:
        raise ValueError(
            f"{name}: {description} has values in [{low:.4g}, {high:.4g}]; float images must be in [0, 1] (or hold "
            f"0-255 values). Already normalised pixel_values go to the model directly; a [0, 1] image that resampling "
            f"pushed slightly out of range needs `.clip(0, 1)`")
    if high <= AMBIGUOUS_FLOAT_MAX:
        raise ValueError(
            f"{name}: {description} has values in [{low:.4g}, {high:.4g}], just above [0, 1]: clip a [0, 1] image "
            f"with `.clip(0, 1)`, or pass 0-255 values as uint8")

    def round_rows(rows):
        rows = rows.astype(work_dtype)
        return np.rint(rows, out=rows)

    return _in_row_chunks(array, round_rows)


def _array_to_pil(image, input_data_format, name: str) -> Image.Image:
    """A numpy array or torch tensor, (H, W), (H, W, C) or (C, H, W) -> PIL image (L, RGB or RGBA)."""
    description = _describe(image)
    channels_first = isinstance(image, torch.Tensor)
    if isinstance(image, torch.Tensor):
        if image.is_complex():
            raise ValueError(f"{name}: {description}: complex values are not an image")
        tensor = image.detach().cpu()
        # numpy has no bfloat16; float32 holds every bfloat16 value exactly
        array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    else:
        array = image
    if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
            or np.issubdtype(array.dtype, np.floating)):  # complex, object, strings: checked before any layout guess
        raise ValueError(f"{name}: {description}: unsupported dtype {array.dtype}; use uint8 (0-255), uint16 "
                         f"(0-65535), bool, or float ([0, 1])")
    if array.ndim not in (2, 3):
        raise ValueError(f"{name}: {description}: an image has 2 dimensions (H, W) or 3, (H, W, C) or (C, H, W); a "
                         f"batch has 4 (N, C, H, W) or (N, H, W, C)")
    if array.size == 0:
        raise ValueError(f"{name}: {description} is empty (a 0-size image)")
    if array.ndim == 3:
        data_format = _channel_format(array, input_data_format, channels_first, name, description)
        array = to_channel_dimension_format(array, ChannelDimension.LAST, input_channel_dim=data_format)
        if array.shape[-1] == 1:
            array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array, name, description)))


def _pil_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels composited on white."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: {_describe(image)} is empty (a 0-size image)")
    try:
        image.load()  # a lazily opened file decodes here: a truncated or corrupt file fails with its name
    except (OSError, SyntaxError, ValueError, AssertionError) as error:  # Pillow asserts on a closed file
        source = f" from {image.filename!r}" if getattr(image, "filename", "") else ""
        reason = str(error) or type(error).__name__
        if getattr(image, "fp", "") is None:
            reason = ("its file was closed before the image was read: use it inside the `with Image.open(...)` "
                      "block, or call `image.load()` there")
        raise ValueError(f"{name}: cannot decode the {_describe(image)}{source}: {reason}") from error
    image = exif_upright(image)
    if image.mode.startswith("I;16"):  # scale by bit depth, not by the image's own maximum: dark stays dark
        return Image.fromarray(_in_row_chunks(np.asarray(image), _sixteen_to_eight_bit)).convert("RGB")
    if image.mode == "I":  # 8- or 16-bit data in a 32-bit container
        array = np.asarray(image)
        if array.max(initial=0) > 255:
            array = _in_row_chunks(array, _sixteen_to_eight_bit)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if np.isnan(array).any():
            raise ValueError(f"{name}: {_describe(image)} contains NaN values")
        array = array * 255.0 if array.max(initial=0) <= 1.0 else array
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8)).convert("RGB")
    try:
        if image.mode == "P":
            image = image.convert("RGBA")  # keeps a palette's transparency, composited below
        elif image.mode == "La":  # premultiplied alpha: Pillow converts it to RGBA only by way of LA
            image = image.convert("LA")
        if image.mode in ("RGBA", "LA", "PA", "RGBa"):
            rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # convert() would copy an RGBA image
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(rgba, mask=rgba)  # an RGBA mask is its alpha band: no separate copy of the channel
            return background
        return image.convert("RGB") if image.mode != "RGB" else image
    except ValueError as error:  # a mode Pillow cannot convert to RGB
        raise ValueError(f"{name}: cannot convert the {_describe(image)} to RGB: {error}") from error


def to_rgb(image, input_data_format: ChannelDimension | str | None = None, name: str = "image") -> Image.Image:
    """One image -> 8-bit RGB PIL image; raises a `ValueError` naming `name` for anything that is not an image.

    Args:
        image: a PIL image of any mode (grayscale, 16-bit, float, RGBA, LA, palette, CMYK, ...), or a numpy array /
            torch tensor of shape (H, W), (H, W, C) or (C, H, W) with 1, 3 or 4 channels, uint8, uint16, bool or float
            in [0, 1]. Transparent pixels are composited on white rather than keeping whatever colour hides under
            alpha 0. An RGB PIL image is returned as it is.
        input_data_format: `"channels_first"` / `"channels_last"` for an array whose channel axis is ambiguous,
            such as (3, H, 3); by default inferred as `transformers.image_utils.infer_channel_dimension_format` does.
        name: how error messages call the image (`images[3]`).
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, name)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return _pil_to_rgb(_array_to_pil(image, input_data_format, name), name)
    raise _type_error(image, name)


def _flat_list_of_images(images) -> list[tuple[str, object]]:
    """(name, image) pairs from one image, a 4-D batch, a list / tuple / dataset column of images or of 4-D batches, or
    one level of nested lists (Transformers' list of images per sample) -- as `make_flat_list_of_images` flattens."""
    def split(batch, name):
        if isinstance(batch, (np.ndarray, torch.Tensor)) and batch.ndim == 4:
            return [(f"{name}[{index}]", image) for index, image in enumerate(batch)]
        return [(name, batch)]

    if images is None:
        raise ValueError("images is None: give a PIL image, a numpy array, a torch tensor or a list of them")
    if _is_single_image(images):
        flat = split(images, "images")
    elif isinstance(images, (str, bytes, dict)):
        raise _type_error(images, "images")
    else:
        try:
            items = list(images)  # lists, tuples, generators and datasets' Column objects
        except TypeError:
            raise _type_error(images, "images") from None
        flat = []
        for index, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                for inner, image in enumerate(item):
                    flat.extend(split(image, f"images[{index}][{inner}]"))
            else:
                flat.extend(split(item, f"images[{index}]"))
    if not flat:
        raise ValueError(f"images is empty ({_describe(images)} without any image): give at least one image")
    return flat


class CamJointImageProcessor(BaseImageProcessor):
    """Resize, center-crop and normalise as timm evaluates the encoder (`timm.data.resolve_data_config`).

    Accepts PIL images of any mode, numpy arrays and torch tensors ((H, W), (H, W, C) or (C, H, W); uint8, uint16,
    bool, or float in [0, 1]; 1, 3 or 4 channels), 4-D batches of arrays, and lists of any of these. An empty list, a
    0-size image, a wrong number of channels, NaN values, out-of-range values and non-images raise a `ValueError` that
    names the entry (`images[2]`), its type and its shape.

    Image size: 1x1 up to very large images work (an 8000 x 8000 = 64 MP photo takes about a second and little more
    memory than the decoded image itself). The processor does not change Pillow's decompression-bomb limit, a
    process-wide security setting that protects `PIL.Image.open` (and Transformers' `load_image`, used by the
    pipelines): Pillow warns above `PIL.Image.MAX_IMAGE_PIXELS` (89.5 MP by default) and refuses files above twice
    that, so 64 MP opens silently. Arrays and tensors are already decoded and not subject to it. To open larger
    files you trust, raise `PIL.Image.MAX_IMAGE_PIXELS` in your own code. The same limit applies to the one image the
    processor itself makes: timm's center-crop resize scales the SHORTER side to input / crop_pct, so an extreme strip
    (1 x 8000 -> 256 x 2,048,000) would need gigabytes; above the limit it warns, above twice it raises.

    Args:
        input_size: (channels, height, width) the encoder expects.
        interpolation: resize interpolation (`bilinear`, `bicubic`, ...).
        mean, std: normalisation statistics.
        crop_pct: fraction of the resized image kept by the center crop.
        crop_mode: timm crop mode (`center`, `squash`, `border`).
    """

    model_input_names = ["pixel_values"]

    def __init__(self, input_size=(3, 224, 224), interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), crop_pct=0.875, crop_mode="center", **kwargs):
        super().__init__()
        self.input_size = list(input_size)
        self.interpolation = interpolation
        self.mean = list(mean)
        self.std = list(std)
        self.crop_pct = crop_pct
        self.crop_mode = crop_mode
        self._transform = None

    @classmethod
    def from_data_config(cls, data_config: dict) -> "CamJointImageProcessor":
        """From a timm data config (`model.encoder_data_config()` / `timm.data.resolve_data_config`)."""
        keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        return cls(**{key: data_config[key] for key in keys if key in data_config})

    def data_config(self) -> dict:
        return {"input_size": tuple(self.input_size), "interpolation": self.interpolation, "mean": tuple(self.mean),
                "std": tuple(self.std), "crop_pct": self.crop_pct, "crop_mode": self.crop_mode}

    @property
    def transform(self):
        if self._transform is None:
            self._transform = timm.data.create_transform(**self.data_config(), is_training=False)
        return self._transform

    def to_dict(self):
        output = super().to_dict()
        for key in ("_transform", "_valid_kwargs_names"):
            output.pop(key, None)
        return output

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the image timm's resize makes from a `width` x `height` image, before the crop.

        Only the "center" crop mode grows with the image's aspect ratio: it scales the image to COVER the
        (input / crop_pct) box, so a 1 x 8000 strip becomes 256 x 2,048,000. "squash" and "border" stay inside it.
        """
        crop_pct = self.crop_pct or timm.data.DEFAULT_CROP_PCT
        box_height, box_width = (math.floor(size / crop_pct) for size in self.input_size[-2:])
        if self.crop_mode in ("squash", "border"):
            return box_width, box_height  # squash: exactly the box; border: fits inside it
        scale = max(box_width / width, box_height / height)
        return max(box_width, round(width * scale)), max(box_height, round(height * scale))

    def _check_resized_size(self, image: Image.Image, name: str) -> None:
        """Refuse an image whose resize would need more memory than Pillow lets a decoded file have.

        The same rule as Pillow's decompression-bomb check on `Image.open` (and the same setting,
        `PIL.Image.MAX_IMAGE_PIXELS`, 89.5 MP by default, None for no limit): a warning above it, an error above twice
        it, instead of a process killed for memory. A 64 MP photo is resized to 256 x 256 and never comes near it;
        with the usual 224 / 0.875 config only strips beyond an aspect ratio of about 1:1365 (warning) / 1:2730 (error)
        do.
        """
        limit = Image.MAX_IMAGE_PIXELS
        if not limit:
            return
        width, height = self.resized_size(*image.size)
        if width * height <= limit:
            return
        message = (f"{name}: a {image.width}x{image.height} image is resized to {width}x{height} "
                   f"({width * height / 1e6:.0f} MP) before its {self.crop_mode} crop")
        if width * height > 2 * limit:
            raise ValueError(f"{message}, more than twice PIL.Image.MAX_IMAGE_PIXELS ({limit}): the size Pillow "
                             f"refuses to decode as a decompression bomb. Crop it to a less extreme aspect ratio "
                             f"first, or raise PIL.Image.MAX_IMAGE_PIXELS if such images are meant")
        logger.warning(f"{message}, more than PIL.Image.MAX_IMAGE_PIXELS ({limit}): this needs about "
                       f"{4 * width * height / 2**30:.1f} GB")

    def _pixel_values(self, image, input_data_format, name: str) -> torch.Tensor:
        rgb = to_rgb(image, input_data_format, name)
        self._check_resized_size(rgb, name)
        return self.transform(rgb)

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt",
                   input_data_format: ChannelDimension | str | None = None, **kwargs) -> BatchFeature:
        """`pixel_values` of shape (batch, *input_size).

        Args:
            images: one image or several (see the class docstring).
            return_tensors: `"pt"` (or None) for a torch tensor, `"np"` for a numpy array.
            input_data_format: `"channels_first"` / `"channels_last"` for arrays whose channel axis is ambiguous.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if input_data_format is not None:  # a misspelt value fails here, naming the valid ones, not per image
            input_data_format = ChannelDimension(input_data_format)
        if kwargs:  # e.g. `size=` of other image processors: say so rather than silently not resizing
            logger.warning_once(f"CamJointImageProcessor ignores {sorted(kwargs)}: its preprocessing is the "
                                f"encoder's timm data config {self.data_config()}")
        pixel_values = torch.stack([self._pixel_values(image, input_data_format, name)
                                    for name, image in _flat_list_of_images(images)])
        if return_tensors == "np":
            pixel_values = pixel_values.numpy()
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=None)


CamJointImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["CamJointImageProcessor", "UnsupportedImageTypeError", "exif_upright", "to_rgb"]
