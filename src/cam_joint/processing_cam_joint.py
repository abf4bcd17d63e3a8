"""CamJoint's processor: the timm image preprocessing plus the word-level caption tokenizer.

This file ships next to every checkpoint as remote code: it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import torch
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_cam_joint import CamJointImageProcessor  # noqa: F401  (copied with the processor)


def _as_texts(text, name: str) -> list[str]:
    """One string or a list / tuple of strings -> list of strings; anything else is a ValueError naming the entry."""
    if isinstance(text, str):
        return [text]
    if text is None or isinstance(text, (bytes, dict)):
        raise ValueError(f"{name} must be a string or a list of strings, got {type(text).__name__}")
    try:
        texts = list(text)
    except TypeError:
        raise ValueError(f"{name} must be a string or a list of strings, got {type(text).__name__}") from None
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise ValueError(f"{name}[{index}] must be a string, got {type(item).__name__} ({item!r:.60})")
    if not texts:
        raise ValueError(f"{name} is an empty list: give at least one string ('' for a caption started at bos)")
    return texts


class CamJointProcessor(ProcessorMixin):
    """`processor(images=..., text=...)` -> `pixel_values` and caption-prompt `input_ids`.

    Text given here is a generation PROMPT: bos followed by its words, no eos (`text=""` is bos alone, the usual
    start of a caption), left-padded so that every prompt ends in the last column, where generation continues it.
    Training captions with bos and eos come from `processor.tokenizer(captions)` or
    `processor.encode_captions(captions)` (right-padded).

    Images are anything `CamJointImageProcessor` accepts (PIL images of any mode, numpy arrays, torch tensors, lists).
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """
        Args:
            images: one image or several, as `CamJointImageProcessor` takes them.
            text: one prompt or a list of prompts, one per image; a single string is every image's prompt.
            return_tensors: `"pt"` (or None) for torch tensors, `"np"` for numpy arrays.
        """
        if images is None and text is None:
            raise ValueError("CamJointProcessor needs images, text, or both")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        tensor_type = "np" if return_tensors == "np" else "pt"
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=tensor_type))
        if text is not None:
            texts = _as_texts(text, "text")
            if "pixel_values" in data and len(texts) != len(data["pixel_values"]):
                if not isinstance(text, str):  # one caption per image: a mismatch would fail deep inside generate()
                    raise ValueError(f"got {len(data['pixel_values'])} images but {len(texts)} texts: give one text "
                                     f"per image, or a single string to use as every image's prompt")
                texts = texts * len(data["pixel_values"])
            # The tokenizer's template adds bos and eos; left padding puts every row's eos in the same, last column,
            # which is dropped: a prompt is continued by generation, not ended.
            input_ids = self.tokenizer(texts, padding=True, padding_side="left", return_attention_mask=False,
                                       return_tensors=tensor_type)["input_ids"]
            if (input_ids[:, -1] == self.tokenizer.eos_token_id).all():
                input_ids = input_ids[:, :-1]
            data["input_ids"] = input_ids
        return BatchFeature(data=data, tensor_type=None)

    def encode_captions(self, captions: list[str], max_length: int | None = None) -> torch.Tensor:
        """Training targets: bos + words + eos, right-padded with pad. Raises on a caption longer than max_length."""
        captions = _as_texts(captions, "captions")
        encoded = self.tokenizer(captions, padding=True, padding_side="right", return_tensors="pt")
        if max_length is not None:
            # the attention mask marks the tokens of each caption (not its padding): its sum is the caption's length
            for caption, length in zip(captions, encoded["attention_mask"].sum(1).tolist()):
                if length > max_length:
                    raise ValueError(f"caption of {length} tokens exceeds max_length={max_length}: {caption!r}")
        return encoded["input_ids"]

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids"]


CamJointProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CamJointProcessor"]
