"""Image preprocessing of CamJoint: exactly the timm encoder's own evaluation transform (its data config).

This file ships next to every checkpoint as remote code: it imports only numpy, PIL, torch, timm and transformers.
"""

from __future__ import annotations

import numpy as np
import timm.data
import torch
from PIL import Image
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor


def to_rgb(image) -> Image.Image:
    """Any PIL mode (grayscale, 16-bit, float, RGBA, LA, palette, CMYK), numpy array or tensor -> RGB PIL image.

    Transparent pixels are composited on white rather than keeping whatever colour hides under alpha 0.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.transpose(1, 2, 0)
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = array.astype(np.float64)
            scale = 255.0 if array.max(initial=0) <= 1.0 else 255.0 / max(array.max(), 1.0)
            array = np.clip(array * scale, 0, 255).astype(np.uint8)
        image = Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, numpy array or tensor, got {type(image).__name__}")
    if image.mode.startswith("I;16"):  # scale by bit depth, not by the image's own maximum: dark stays dark
        image = Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8))
    elif image.mode == "I":  # 8- or 16-bit data in a 32-bit container
        array = np.asarray(image, dtype=np.float64)
        array = array / 257.0 if array.max(initial=0) > 255 else array
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = array * 255.0 if array.max(initial=0) <= 1.0 else array
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


class CamJointImageProcessor(BaseImageProcessor):
    """Resize, center-crop and normalise as timm evaluates the encoder (`timm.data.resolve_data_config`).

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

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)):
            images = [images]
        images = list(images)  # lists, tuples, and datasets' Column objects
        pixel_values = torch.stack([self.transform(to_rgb(image)) for image in images])
        if return_tensors == "np":
            pixel_values = pixel_values.numpy()
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=None)


CamJointImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["CamJointImageProcessor", "to_rgb"]
