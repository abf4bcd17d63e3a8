"""The objectives CamJoint trains with, as small functions a training loop composes.

    L = w_class L_class + w_caption L_caption [+ w_concept L_concept] [+ w_cam L_cam]      (ETRI 2020, eq. 9)

* `class_loss` (eq. 1), `caption_loss` on `token_log_probs` (eq. 2, mean over tokens), `concept_loss` (Liu et al.
  2017, eq. 5), `self_critical_loss` (Rennie et al. 2017) and `cam_disagreement_loss` (eq. 6 with Algorithm 1's
  gradient routing), or in its place (`config.cam_guide`) `cam_guidance_loss`: the classifier's maps pulled toward
  a fixed guide, the captioner's map (a one-way teacher) or the ground-truth mask (the oracle), by `guidance_loss`
  (`cosine`: eq. 6's form; `evidence`: `evidence_outside_share`). `CamJointModel.forward(labels=..., input_ids=...)` returns the config's sum of them
  (`joint_losses`); training modes that change the objective (semantic stage 1, self-critical training) compose the
  same functions in the training loop.

Routing (Algorithm 1 lines 15-17) is done by what each loss is computed from — detached head weights and detached
feature maps in L_cam — so a step stays ONE backward of ONE scalar: DDP, gradient accumulation and autocast work
unchanged.

This file ships next to every checkpoint as remote code: it imports only torch and its siblings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cam_core import MAP_SIMILARITIES, at_least_float32, disagreement_loss
from .outputs_cam_joint import CamJointOutput

# The model argument of the CAM losses is a `CamJointModel` (its config, `disagreement_maps`, `guidance_maps`); typed
# as a module here so that this file, which the model imports, never imports the model back.
CamJointModule = nn.Module


def class_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the class logits (eq. 1)."""
    return F.cross_entropy(at_least_float32(logits), labels)


def token_log_probs(caption_logits: Tensor, input_ids: Tensor, pad_token_id: int,
                    attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """log P(w_t | w_<t, image) of each caption token after bos (B, T-1), and the mask of real (non-pad) tokens."""
    targets = input_ids[:, 1:]
    mask = (targets != pad_token_id) if attention_mask is None else attention_mask[:, 1:].bool()
    log_probs = -F.cross_entropy(at_least_float32(caption_logits[:, :-1]).transpose(1, 2), targets,
                                 reduction="none")
    return log_probs, mask.to(log_probs.dtype)


def caption_loss(log_probs: Tensor, mask: Tensor) -> Tensor:
    """Mean token cross-entropy of a teacher-forced caption (eq. 2); 0 for a batch without captions."""
    return -(log_probs * mask).sum() / mask.sum().clamp_min(1)


def caption_score(log_probs: Tensor, mask: Tensor, reduction: str = "sum",
                  token_weights: Tensor | None = None) -> Tensor:
    """A caption's score per image: log P(caption | image), the `sum` of its token log-probabilities, or their
    `mean` (length-normalised), or (`discriminative`) sum_t w_t log P(w_t | ...) with each token's weight
    `token_weights` (B, T-1): how much the word tells the class. The CAM's caption target."""
    if reduction == "discriminative":
        if token_weights is None:
            raise ValueError("the discriminative caption score needs token_weights (B, T-1)")
        return (log_probs * mask * token_weights.to(log_probs.dtype)).sum(1)
    total = (log_probs * mask).sum(1)
    if reduction == "mean":
        return total / mask.sum(1).clamp_min(1)
    return total


def concept_loss(concept_probs: Tensor, concept_labels: Tensor) -> Tensor:
    """Eq. 5 of Liu et al. (2017): binary cross-entropy SUMMED over the K concepts (a mean over them would shrink
    each concept's gradient K-fold, 1000-fold by default), averaged over the images of the batch."""
    if concept_labels.shape != concept_probs.shape:
        raise ValueError(f"concept_labels must have shape (batch, num_concepts) = {tuple(concept_probs.shape)}, got "
                         f"{tuple(concept_labels.shape)}")
    bce = F.binary_cross_entropy(at_least_float32(concept_probs).clamp(1e-6, 1 - 1e-6), concept_labels.float(),
                                 reduction="none")
    return bce.sum(1).mean()


def self_critical_loss(sampled_log_probs: Tensor, sampled_mask: Tensor, advantage: Tensor) -> Tensor:
    """The policy-gradient loss: -(advantage x log-probability of each sampled token), mean over sampled tokens."""
    weighted = advantage.to(sampled_log_probs.dtype)[:, None] * sampled_log_probs * sampled_mask
    return -weighted.sum() / sampled_mask.sum().clamp_min(1)


def cam_disagreement_loss(model: CamJointModule, out: CamJointOutput, labels: Tensor, input_ids: Tensor,
                          log_probs: Tensor | None = None, mask: Tensor | None = None,
                          predicted_labels: Tensor | None = None,
                          predicted_caption_ids: Tensor | None = None) -> Tensor:
    """Eq. 6, averaged over the batch, on the maps of `model.disagreement_maps` (see it for the routing).

    Args:
        model: the (unwrapped) `CamJointModel`.
        out: its forward output on the batch (feature maps, z, class logits).
        labels, input_ids: the answer class and the answer caption of each image.
        log_probs, mask: `token_log_probs` of the answer caption from `out`'s own teacher-forced pass, when it has one
            (first-order mode then reuses it instead of running the captioner again).
        predicted_labels, predicted_caption_ids: hold the "p" targets fixed instead of re-choosing them.
    """
    maps = model.disagreement_maps(out.feature_maps, out.image_embeds, out.logits, labels, input_ids, log_probs,
                                   mask, predicted_labels=predicted_labels,
                                   predicted_caption_ids=predicted_caption_ids)
    answer_class, predicted_class, answer_caption, predicted_caption = maps
    return disagreement_loss(answer_caption, predicted_class, answer_class, predicted_caption,
                             similarity=model.config.cam_similarity)


def evidence_outside_share(signed_maps: Tensor, guide: Tensor, eps: float = 1e-12) -> Tensor:
    """The share of each class's signed evidence that lies outside the guide region, averaged over classes and images.

        share_k = sum_ij (1 - g_ij) |M_k,ij| / sum_ij |M_k,ij|,    g = guide / max(guide) per image

    Args:
        signed_maps: M (K, B, h, w), maps WITHOUT ReLU (Grad-CAM's sum_c a_kc A_c): a class can be decided by its
            negative evidence too, which a ReLU'd map never shows.
        guide: g (B, h, w), >= 0; rescaled to max 1 per image (an all-zero guide counts everything as outside).
    Returns:
        a scalar in [0, 1]; an all-zero map adds 0 (no evidence is outside), with a finite gradient.
    """
    guide = at_least_float32(guide)
    guide = guide / guide.amax((-2, -1), keepdim=True).clamp_min(eps)
    magnitude = at_least_float32(signed_maps).abs()
    outside = (magnitude * (1 - guide)).sum((-2, -1))
    return (outside / magnitude.sum((-2, -1)).clamp_min(eps)).mean()


def guidance_loss(maps: Tensor, guide: Tensor, loss: str = "cosine", similarity: str = "cosine") -> Tensor:
    """The classifier's maps against a fixed guide (B, h, w). `cosine`: eq. 6's form on the answer class's map
    (maps (1, B, h, w)), 1 - `similarity`(map, guide) averaged over images; `evidence`: `evidence_outside_share` of
    every class's signed map (maps (K, B, h, w))."""
    if loss == "evidence":
        return evidence_outside_share(maps, guide)
    if loss != "cosine":
        raise ValueError(f"unknown cam_guidance_loss {loss!r}: choose cosine or evidence")
    return (1 - MAP_SIMILARITIES[similarity](maps[0], guide)).mean()


def cam_guidance_loss(model: CamJointModule, out: CamJointOutput, labels: Tensor, input_ids: Tensor | None,
                      guide_masks: Tensor | None = None, log_probs: Tensor | None = None,
                      mask: Tensor | None = None) -> Tensor:
    """The one-way CAM loss of `config.cam_guide` ("captioner": the captioner's answer-caption map is the teacher;
    "mask": the ground-truth deciding-parts mask, the oracle) on the maps of `model.guidance_maps`."""
    maps, guide = model.guidance_maps(out.feature_maps, out.image_embeds, labels, input_ids, guide_masks, log_probs,
                                      mask)
    cfg = model.config
    return guidance_loss(maps, guide, cfg.cam_guidance_loss, cfg.cam_similarity)


def cam_loss(model: CamJointModule, out: CamJointOutput, labels: Tensor, input_ids: Tensor | None,
             guide_masks: Tensor | None = None, log_probs: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """L_cam as the config asks for it: eq. 6 between the heads (`cam_guide="mutual"`) or a one-way guidance loss."""
    if model.config.cam_guide == "mutual":
        return cam_disagreement_loss(model, out, labels, input_ids, log_probs, mask)
    return cam_guidance_loss(model, out, labels, input_ids, guide_masks, log_probs, mask)


def joint_losses(model: CamJointModule, out: CamJointOutput, labels: Tensor | None, input_ids: Tensor | None,
                 attention_mask: Tensor | None = None, concept_labels: Tensor | None = None,
                 guide_masks: Tensor | None = None) -> dict[str, Tensor]:
    """Every loss of the config the given targets allow, by name (`class_loss`, `caption_loss`, `concept_loss`,
    `cam_loss`), unweighted; `weighted_sum` adds them with the config's weights."""
    cfg = model.config
    losses: dict[str, Tensor] = {}
    if out.logits is not None and labels is not None:
        losses["class_loss"] = class_loss(out.logits, labels)
    if out.concept_probs is not None and concept_labels is not None:
        losses["concept_loss"] = concept_loss(out.concept_probs, concept_labels)
    log_probs = mask = None
    if out.caption_logits is not None:
        log_probs, mask = token_log_probs(out.caption_logits, input_ids, cfg.pad_token_id, attention_mask)
        # Always present (0 for a batch without captions) so every captioner weight is in every step's graph: DDP
        # then never sees unused parameters.
        losses["caption_loss"] = caption_loss(log_probs, mask)
    if cfg.uses_cam_loss and labels is not None and input_ids is not None and out.feature_maps is not None:
        losses["cam_loss"] = cam_loss(model, out, labels, input_ids, guide_masks, log_probs, mask)
    return losses


def weighted_sum(config, losses: dict[str, Tensor]) -> Tensor | None:
    """sum of `config.<name>_weight * loss` over the named losses (None when there are none)."""
    if not losses:
        return None
    return sum(getattr(config, f"{name}_weight") * value for name, value in losses.items())


__all__ = ["class_loss", "token_log_probs", "caption_loss", "caption_score", "concept_loss", "self_critical_loss",
           "cam_disagreement_loss", "evidence_outside_share", "guidance_loss", "cam_guidance_loss", "cam_loss",
           "joint_losses", "weighted_sum"]
