"""The output types of the CamJoint models, below both the models and their losses.

`losses_cam_joint` reads a `CamJointOutput` and `modeling_cam_joint` builds one: the type lives here, so neither
imports the other for it (`from cam_joint.modeling_cam_joint import CamJointOutput` still works: modeling re-exports
it).

This file ships next to every checkpoint as remote code: it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from transformers.utils import ModelOutput

from .modeling_lstm_captioner import LSTMCaptionCache


@dataclass
class CamJointVisionOutput(ModelOutput):
    """Output of [`CamJointVisionModel`]: A (B, C, h, w), p = GAP(A) (B, C) and z = f_medi(p) (B, D)."""

    feature_maps: Tensor | None = None
    pooled_features: Tensor | None = None
    image_embeds: Tensor | None = None


@dataclass
class CamJointOutput(ModelOutput):
    """Output of [`CamJointModel`].

    Args:
        loss: the config's weighted sum of the losses below that the given targets allow.
        class_loss: cross-entropy of the class logits (eq. 1).
        caption_loss: mean token cross-entropy of the teacher-forced caption (eq. 2).
        cam_loss: the CAM loss, averaged over the batch: the disagreement loss (eq. 6), or with `config.cam_guide`
            set, the guidance loss pulling the classifier's maps toward the captioner's or the ground-truth mask.
        concept_loss: binary cross-entropy of the concept probabilities, summed over the concepts and averaged over
            the images (`variant="semantic"`, eq. 5 of Liu et al. 2017).
        logits: class scores, (batch, num_labels).
        caption_logits: next-token scores of the teacher-forced caption, (batch, length, vocab_size).
        concept_probs: concept probabilities (`variant="semantic"`), (batch, num_concepts).
        image_embeds: z, the image vector both heads read, (batch, D).
        feature_maps: A, the encoder's last feature map, (batch, C, h, w).
        cache: the captioner's state after the last caption token.
    """

    loss: Tensor | None = None
    class_loss: Tensor | None = None
    caption_loss: Tensor | None = None
    cam_loss: Tensor | None = None
    concept_loss: Tensor | None = None
    logits: Tensor | None = None
    caption_logits: Tensor | None = None
    concept_probs: Tensor | None = None
    image_embeds: Tensor | None = None
    feature_maps: Tensor | None = None
    cache: LSTMCaptionCache | None = None


__all__ = ["CamJointOutput", "CamJointVisionOutput"]
