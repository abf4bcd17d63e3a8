"""One prediction path: images -> class scores, captions and the two heads' CAMs.

    prediction = predict_batch(model, processor, images, cam=True)
    prediction.top_classes(k=5)      # [(class id, name, probability), ...] per image
    prediction.captions              # decoded captions
    prediction.class_maps, prediction.caption_maps      # (B, h, w) Grad-CAM of each head

Evaluation, `cam-joint caption`, `cam-joint explain`, the CAM pictures written after training and the demo page all
call `predict_batch`, so a caption is generated, cut and scored the same way everywhere: the image is encoded once,
both heads read the same feature maps, and a generated caption is cut at its first eos (beam search pads finished
beams with eos, and an eos that stayed would be scored as a word of the caption).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor


@dataclass
class BatchPrediction:
    """What `predict_batch` returns for a batch of B images (tensors on the CPU, float32)."""

    pixel_values: Tensor
    logits: Tensor | None = None  # (B, num_labels) class scores
    caption_ids: Tensor | None = None  # (B, T): bos, words, eos, pad... (cut at the first eos)
    captions: list[str] | None = None
    reached_max_length: list[bool] | None = None  # the caption ended because max_length was hit, not at eos
    cam_labels: Tensor | None = None  # the class each `class_maps` entry explains
    class_maps: Tensor | None = None  # (B, h, w)
    caption_maps: Tensor | None = None  # (B, h, w)
    word_maps: Tensor | None = None  # (B, T-1, h, w), one per caption token after bos
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def probabilities(self) -> Tensor | None:
        return None if self.logits is None else self.logits.softmax(-1)

    def top_classes(self, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Per image, the k best classes as (class id, class name, probability), best first."""
        if self.logits is None:
            return [[] for _ in range(len(self.pixel_values))]
        probs = self.probabilities
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(int(i), self.id2label.get(int(i), str(int(i))), float(v)) for v, i in zip(values, indices)]
                for values, indices in zip(top.values, top.indices)]


def cut_at_eos(ids: Tensor, eos_token_id: int, pad_token_id: int) -> Tensor:
    """Every token after a row's first eos (after the bos at position 0) becomes pad."""
    after_eos = (ids[:, 1:] == eos_token_id).cumsum(1) - (ids[:, 1:] == eos_token_id).long() > 0
    out = ids.clone()
    out[:, 1:][after_eos] = pad_token_id
    return out


def image_processor_of(processor):
    """The image processor of a CamJointProcessor (or the image processor itself)."""
    return getattr(processor, "image_processor", processor)


@torch.no_grad()
def predict_batch(model, processor, images: Sequence | None = None, *, pixel_values: Tensor | None = None,
                  generation_kwargs: Mapping[str, Any] | None = None, cam: bool = False,
                  cam_labels: Tensor | None = None, per_word: bool = False) -> BatchPrediction:
    """Classify, caption and (with `cam`) explain a batch of images with a CamJoint model.

    Args:
        model: a `CamJointModel` (any variant); evaluated as it is (the caller sets eval mode).
        processor: its `CamJointProcessor` (or just the image processor for a model without a captioner).
        images: PIL images (or anything the image processor takes); or `pixel_values` already preprocessed.
        generation_kwargs: for `model.generate` (e.g. `{"num_beams": 3}`); default: the model's generation config.
        cam: also compute the classifier's map (for `cam_labels`, default its predicted class) and the captioner's
            map (for its generated caption).
        per_word: with `cam`, also one captioner map per caption word.
    """
    if pixel_values is None:
        if images is None or len(images) == 0:
            raise ValueError("predict_batch needs at least one image")
        pixel_values = image_processor_of(processor)(list(images), return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(model.device)
    feature_maps = model.get_feature_maps(pixel_values)  # encoded once, shared by every head
    result = BatchPrediction(pixel_values=pixel_values.cpu(),
                             id2label={int(k): str(v) for k, v in (model.config.id2label or {}).items()})
    if getattr(model, "classifier", None) is not None:
        result.logits = model.classifier(model.image_vector(feature_maps.mean((2, 3)))).float().cpu()
    if getattr(model, "captioner", None) is not None:
        _caption(model, processor, feature_maps, generation_kwargs, result)
    if cam:
        _explain(model, feature_maps, cam_labels, per_word, result)
    return result


def _caption(model, processor, feature_maps: Tensor, generation_kwargs, result: BatchPrediction) -> None:
    cfg = model.config
    ids = model.generate(feature_maps=feature_maps, **dict(generation_kwargs or {}))
    ids = cut_at_eos(ids, cfg.eos_token_id, cfg.pad_token_id)
    result.caption_ids = ids.cpu()
    result.captions = [" ".join(text.split()) for text in processor.batch_decode(ids, skip_special_tokens=True)]
    result.reached_max_length = [bool(cfg.eos_token_id not in row[1:].tolist()) for row in ids]


def _explain(model, feature_maps: Tensor, cam_labels: Tensor | None, per_word: bool, result: BatchPrediction) -> None:
    if result.logits is not None:
        labels = result.logits.argmax(-1) if cam_labels is None else torch.as_tensor(cam_labels, dtype=torch.long)
        result.cam_labels = labels
        labels = labels.to(feature_maps.device)
        result.class_maps = model.grad_cam(feature_maps=feature_maps, labels=labels).float().cpu()
    if result.caption_ids is not None:
        ids = result.caption_ids.to(feature_maps.device)
        result.caption_maps = model.grad_cam(feature_maps=feature_maps, caption_ids=ids).float().cpu()
        if per_word:
            result.word_maps = model.grad_cam(feature_maps=feature_maps, caption_ids=ids, per_word=True).float().cpu()


__all__ = ["BatchPrediction", "predict_batch", "cut_at_eos", "image_processor_of"]
