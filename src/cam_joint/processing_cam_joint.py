"""CamJoint's processor: the timm image preprocessing plus the word-level caption tokenizer.

This file ships next to every checkpoint as remote code: it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import torch
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_cam_joint import CamJointImageProcessor  # noqa: F401  (copied with the processor)


class CamJointProcessor(ProcessorMixin):
    """`processor(images=..., text=...)` -> `pixel_values` and caption-prompt `input_ids`.

    Text given here is a generation PROMPT: bos followed by its words, no eos (`text=""` is bos alone, the usual
    start of a caption). Training captions with bos and eos come from `processor.tokenizer(captions)` or
    `processor.encode_captions(captions)`.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("CamJointProcessor needs images, text, or both")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors="pt"))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
            eos = self.tokenizer.eos_token_id
            prompts = [ids[:-1] if ids and ids[-1] == eos else ids for ids in encoded]
            data["input_ids"] = self._pad(prompts, left=True)
        return BatchFeature(data=data, tensor_type=None)

    def encode_captions(self, captions: list[str], max_length: int | None = None) -> torch.Tensor:
        """Training targets: bos + words + eos, right-padded with pad. Raises on a caption longer than max_length."""
        encoded = self.tokenizer(list(captions), add_special_tokens=True)["input_ids"]
        if max_length is not None:
            for caption, ids in zip(captions, encoded):
                if len(ids) > max_length:
                    raise ValueError(f"caption of {len(ids)} tokens exceeds max_length={max_length}: {caption!r}")
        return self._pad(encoded, left=False)

    def _pad(self, sequences: list[list[int]], left: bool) -> torch.Tensor:
        length = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id
        rows = [([pad] * (length - len(ids)) + ids) if left else (ids + [pad] * (length - len(ids)))
                for ids in sequences]
        return torch.tensor(rows, dtype=torch.long)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids"]


CamJointProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CamJointProcessor"]
