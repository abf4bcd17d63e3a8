"""The class-activation-map core every CamJoint map goes through (paper eqs. 4-7), differentiable end to end.

For a target score y (a class logit, or the log-probability of a caption given the image) and the encoder's last
feature map A (B x C x h x w), Grad-CAM is

    a_k = (1/Z) sum_ij dy/dA_ij^k          (eq. 4, Z = h*w)
    CAM = [ReLU] sum_k a_k A^k             (eq. 5; Grad-CAM's ReLU is optional)

Because CamJoint pools the map, p = GAP(A), every dy/dA_ij^k equals (1/hw) dy/dp_k: the maps need only the gradient
with respect to the pooled vector, never a B x C x h x w gradient. And because z = f_medi(p) feeds both heads,
dy/dp = J_medi(p)^T dy/dz: a head contributes only its *sensitivity* s = dy/dz (`pooled_gradient`).

Methods are small classes on one base, as in pytorch-grad-cam (`BaseCAM.get_cam_weights`), registered by name in
`CAM_METHODS` (the config's `cam_method`). Each takes the feature maps and the gradient of the targets, either pooled
(..., B, C) — the GAP shortcut above, spatially constant dy/dA — or spatial (..., B, C, h, w) for a head that
reads A directly. Everything is plain torch, so every map can be differentiated (the CAM loss needs that;
pytorch-grad-cam works in numpy and detaches). A new method is one subclass and one registry line.

This file ships next to every checkpoint as remote code: it imports only torch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def at_least_float32(tensor: Tensor) -> Tensor:
    """Upcast half precision (autocast) to float32 for reductions; keep float32 and float64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class BaseCAM:
    """A CAM as a weighted sum of feature-map channels, `CAM = [ReLU] sum_k w_k A^k` (pytorch-grad-cam's BaseCAM).

    Subclasses define `get_cam_weights(feature_maps, gradient) -> (..., B, C)`, or override `cam_image` when the
    weighting is per pixel.
    """

    name: str = ""

    def get_cam_weights(self, feature_maps: Tensor, gradient: Tensor) -> Tensor:
        raise NotImplementedError

    def cam_image(self, feature_maps: Tensor, gradient: Tensor) -> Tensor:
        weights = self.get_cam_weights(feature_maps, gradient)
        return torch.einsum("...bc,bchw->...bhw", weights, feature_maps)

    def __call__(self, feature_maps: Tensor, gradient: Tensor, relu: bool = True) -> Tensor:
        """Maps (..., B, h, w) in float32 under autocast (float64 stays float64).

        Args:
            feature_maps: A, shape (B, C, h, w), at least 2 x 2.
            gradient: dy/dp (..., B, C) for pooled heads, or dy/dA (..., B, C, h, w).
            relu: apply Grad-CAM's ReLU.
        """
        _check_shapes(feature_maps, gradient)
        gradient = at_least_float32(gradient)
        maps = self.cam_image(at_least_float32(feature_maps).to(gradient.dtype), gradient)
        return torch.relu(maps) if relu else maps


def is_spatial(feature_maps: Tensor, gradient: Tensor) -> bool:
    """Whether `gradient` is dy/dA (..., B, C, h, w) rather than dy/dp (..., B, C)."""
    return gradient.ndim >= 4 and tuple(gradient.shape[-4:]) == tuple(feature_maps.shape)


def spatial_gradient(feature_maps: Tensor, gradient: Tensor) -> Tensor:
    """dy/dA (..., B, C, h, w): given as is, or spread from dy/dp as (1/hw) dy/dp_k at every position (p = GAP(A))."""
    if is_spatial(feature_maps, gradient):
        return gradient
    h, w = feature_maps.shape[-2:]
    return (gradient / (h * w))[..., None, None].expand(*gradient.shape, h, w)


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017): w_k = mean_ij dy/dA_ij^k (eq. 4 of the ETRI paper)."""

    name = "gradcam"

    def get_cam_weights(self, feature_maps: Tensor, gradient: Tensor) -> Tensor:
        if is_spatial(feature_maps, gradient):
            return gradient.mean((-2, -1))
        h, w = feature_maps.shape[-2:]
        return gradient / (h * w)  # mean_ij (1/hw) dy/dp_k


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin, 2020): sum_k dy/dA^k (.) A^k, element-wise. Equal to Grad-CAM whenever the gradient
    is spatially constant, which is the case for every head that reads the pooled vector."""

    name = "hirescam"

    def cam_image(self, feature_maps: Tensor, gradient: Tensor) -> Tensor:
        return (spatial_gradient(feature_maps, gradient) * feature_maps).sum(-3)


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), eq. 19 with the exponential-score approximation, exactly as
    pytorch-grad-cam computes it: alpha = g^2 / (2 g^2 + sum_ij A * g^3 + eps), w_k = sum_ij alpha * ReLU(g)."""

    name = "gradcam++"
    eps = 1e-6  # pytorch-grad-cam's

    def get_cam_weights(self, feature_maps: Tensor, gradient: Tensor) -> Tensor:
        grads = spatial_gradient(feature_maps, gradient)
        squared = grads.square()
        sum_activations = feature_maps.sum((-2, -1))[..., None, None]
        alpha = squared / (2 * squared + sum_activations * squared * grads + self.eps)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(grads) * alpha).sum((-2, -1))


# name -> method; `config.cam_method` picks one. A new method: one BaseCAM subclass and one line here.
CAM_METHODS: dict[str, type[BaseCAM]] = {cls.name: cls for cls in (GradCAM, HiResCAM, GradCAMPlusPlus)}


def get_cam_method(name: str) -> BaseCAM:
    """The CAM method registered as `name` (see `CAM_METHODS`)."""
    if name not in CAM_METHODS:
        raise ValueError(f"unknown cam_method {name!r}: choose one of {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name]()


def _check_shapes(feature_maps: Tensor, gradient: Tensor) -> None:
    if feature_maps.ndim != 4:
        raise ValueError(f"feature maps must have shape (B, C, h, w), got {tuple(feature_maps.shape)}")
    h, w = feature_maps.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"a CAM needs a feature map of at least 2x2 to say where anything is; this encoder and input "
                         f"size give {h}x{w} (use a larger image size, or an output_stride/dilation encoder setting)")
    pooled_form = gradient.ndim >= 2 and tuple(gradient.shape[-2:]) == tuple(feature_maps.shape[:2])
    if not (pooled_form or is_spatial(feature_maps, gradient)):
        raise ValueError(f"gradient of shape {tuple(gradient.shape)} fits neither the pooled (..., B, C) nor the "
                         f"spatial (..., B, C, h, w) form for feature maps {tuple(feature_maps.shape)}")


def cam_from_pooled_gradient(feature_maps: Tensor, pooled_gradient: Tensor, relu: bool = True) -> Tensor:
    """Grad-CAM maps (..., B, h, w) from dy/dp: `GradCAM()(feature_maps, pooled_gradient, relu)`."""
    return GradCAM()(feature_maps, pooled_gradient, relu)


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


def map_pearson(maps_a: Tensor, maps_b: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlation of two batches of maps over h x w: the cosine of the maps less their means.

    Unlike the cosine, it gives a flat map no credit: a uniform non-negative map has cosine mean/rms with ANY map
    (0.5-0.6 for typical CAMs), so two maps can raise their cosine by both flattening; their correlation cannot.
    """
    a = at_least_float32(maps_a.flatten(1))
    b = at_least_float32(maps_b.flatten(1))
    return map_cosine(a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True), eps)


# name -> similarity of two batches of maps; `config.cam_similarity` picks the one eq. 6 uses.
MAP_SIMILARITIES = {"cosine": map_cosine, "pearson": map_pearson}


def disagreement_loss(cam_answer_caption: Tensor, cam_predicted_class: Tensor, cam_answer_class: Tensor,
                      cam_predicted_caption: Tensor, similarity: str = "cosine") -> Tensor:
    """Eq. 6 averaged over the batch: (1 - cos(cam_a^c, cam_p^l)) + (1 - cos(cam_a^l, cam_p^c)).

    `similarity="pearson"` puts the maps' correlation in place of the cosine (`map_pearson`).
    """
    if similarity not in MAP_SIMILARITIES:
        raise ValueError(f"unknown cam_similarity {similarity!r}: choose one of {', '.join(MAP_SIMILARITIES)}")
    sim = MAP_SIMILARITIES[similarity]
    return ((1 - sim(cam_answer_caption, cam_predicted_class))
            + (1 - sim(cam_answer_class, cam_predicted_caption))).mean()


__all__ = ["at_least_float32", "BaseCAM", "GradCAM", "HiResCAM", "GradCAMPlusPlus", "CAM_METHODS", "get_cam_method",
           "cam_from_pooled_gradient", "pooled_gradient", "map_cosine", "map_pearson", "MAP_SIMILARITIES",
           "disagreement_loss"]
