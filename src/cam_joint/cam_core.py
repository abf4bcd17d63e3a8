"""The Grad-CAM core every CamJoint map goes through (paper eqs. 4-7).

For a target score y (a class logit, or the log-probability of a caption given the image) and the encoder's last
feature map A (B x C x h x w), Grad-CAM is

    a_k = (1/Z) sum_ij dy/dA_ij^k          (eq. 4, Z = h*w)
    CAM = [ReLU] sum_k a_k A^k             (eq. 5; Grad-CAM's ReLU is optional)

Because CamJoint pools the map, p = GAP(A), every dy/dA_ij^k equals (1/hw) dy/dp_k: the weights need only the
gradient with respect to the pooled vector, a_k = dy/dp_k / hw, never a B x C x h x w gradient. And because
z = f_medi(p) feeds both heads, dy/dp = J_medi(p)^T dy/dz: a head contributes only its *sensitivity* s = dy/dz.

This file ships next to every checkpoint as remote code: it imports only torch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def at_least_float32(tensor: Tensor) -> Tensor:
    """Upcast half precision (autocast) to float32 for reductions; keep float32 and float64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def cam_from_pooled_gradient(feature_maps: Tensor, pooled_gradient: Tensor, relu: bool = True) -> Tensor:
    """Grad-CAM maps from the gradient of the targets with respect to the pooled features.

    Args:
        feature_maps: A, shape (B, C, h, w).
        pooled_gradient: dy/dp, shape (B, C), or (K, B, C) for K targets per image.
        relu: apply Grad-CAM's ReLU.

    Returns:
        Maps of shape (B, h, w) (or (K, B, h, w)), in float32 under autocast (float64 stays float64).
    """
    h, w = feature_maps.shape[-2:]
    weights = at_least_float32(pooled_gradient) / (h * w)  # a_k = (1/Z) sum_ij (1/hw) dy/dp_k = dy/dp_k / hw
    maps = torch.einsum("...bc,bchw->...bhw", weights, at_least_float32(feature_maps).to(weights.dtype))
    return torch.relu(maps) if relu else maps


def pooled_gradient(pooled: Tensor, to_image_vector: Callable[[Tensor], Tensor], sensitivity: Tensor,
                    create_graph: bool) -> Tensor:
    """dy/dp = J(p)^T s for K sensitivities at once: one vector-Jacobian product through `to_image_vector` (f_medi).

    Args:
        pooled: p, shape (B, C); must require grad.
        to_image_vector: f_medi, mapping (N, C) -> (N, D) row by row.
        sensitivity: s = dy/dz, shape (K, B, D).
        create_graph: keep the graph so the result can be differentiated (the CAM loss needs it).
    """
    k = sensitivity.shape[0]
    repeated = pooled.unsqueeze(0).expand(k, *pooled.shape).reshape(-1, pooled.shape[-1])
    image_vector = to_image_vector(repeated)
    (grad,) = torch.autograd.grad(image_vector, repeated, grad_outputs=sensitivity.reshape(image_vector.shape),
                                  create_graph=create_graph, retain_graph=True)
    return grad.view(k, *pooled.shape)


def map_cosine(maps_a: Tensor, maps_b: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of two batches of maps over h x w (eq. 7), finite everywhere.

    The `eps` inside each square root keeps the value and the gradient finite for an all-zero map (Grad-CAM's ReLU
    of an all-negative map): its cosine is 0 and, through the ReLU, its gradient is 0 rather than NaN.
    """
    a = at_least_float32(maps_a.flatten(1))
    b = at_least_float32(maps_b.flatten(1))
    return (a * b).sum(-1) / ((a.square().sum(-1) + eps).sqrt() * (b.square().sum(-1) + eps).sqrt())


def disagreement_loss(cam_answer_caption: Tensor, cam_predicted_class: Tensor, cam_answer_class: Tensor,
                      cam_predicted_caption: Tensor) -> Tensor:
    """Eq. 6 averaged over the batch: (1 - cos(cam_a^c, cam_p^l)) + (1 - cos(cam_a^l, cam_p^c))."""
    return ((1 - map_cosine(cam_answer_caption, cam_predicted_class))
            + (1 - map_cosine(cam_answer_class, cam_predicted_caption))).mean()


class CaptionTarget:
    """Target score: log P(caption | image) = the sum (or mean) of the caption's token log-probabilities.

    `token_log_probs` are the log-probabilities of the caption's own tokens, shape (B, T), zero at padding.
    """

    def __init__(self, reduction: str = "sum"):
        self.reduction = reduction

    def __call__(self, token_log_probs: Tensor, token_mask: Tensor) -> Tensor:
        total = (token_log_probs * token_mask).sum(1)
        if self.reduction == "mean":
            return total / token_mask.sum(1).clamp_min(1)
        return total


__all__ = ["at_least_float32", "cam_from_pooled_gradient", "pooled_gradient", "map_cosine", "disagreement_loss",
           "CaptionTarget"]
