"""CamJoint: fine-grained image classification and captioning trained jointly (Yoon et al., ETRI Journal 2020).

    image --f_encode--> A (B x C x h x w) --GAP--> p (B x C) --f_medi--> z (B x D) --f_class--> class logits
                                                                              \\--f_caption--> words (LSTM)

A model family as Transformers builds one (BLIP): every class reads the same checkpoint folder.

* `CamJointVisionModel`: the image path, encoder -> A -> p -> z (`get_feature_maps`, `get_image_features`).
* `CamJointForImageClassification`: + f_class; what `AutoModelForImageClassification` and the image-classification
  pipeline load.
* `CamJointModel`: the joint model `AutoModel` loads: + f_caption (`model.captioner`, a causal decoder that
  `generate()` delegates to), the joint loss (`losses_cam_joint`), the four CAMs of the disagreement loss
  (`disagreement_maps`) and the classifier's maps with their fixed guide for the one-way guidance losses
  (`guidance_maps`: the captioner as teacher, the mask oracle).

Every class builds its parts under the same attribute names (encoder, intermediate, classifier, captioner), so the
state-dict keys are the same in all of them and in checkpoints saved before this layout.

This file ships next to every checkpoint as remote code: it imports only torch, timm, transformers and its siblings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence, Union

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ImageClassifierOutput

from .cam_core import get_cam_method, pooled_gradient
from .configuration_cam_joint import CamJointConfig
from .losses_cam_joint import caption_score, joint_losses, token_log_probs, weighted_sum
from .modeling_lstm_captioner import CamJointLSTMCaptioner, LSTMCaptionCache
from .outputs_cam_joint import CamJointOutput, CamJointVisionOutput

# config.captioner_type -> class. A new captioner: one file with a causal-decoder class like CamJointLSTMCaptioner
# (forward(input_ids, image_embeds, cache) -> logits, `decode`, GenerationMixin) and one line here.
CAPTIONERS: dict[str, type[PreTrainedModel]] = {"lstm": CamJointLSTMCaptioner}

_ACT2FN_NAMES = {"identity": "linear"}  # config name -> transformers.activations.ACT2FN name

AUTO_MAP = {
    "AutoConfig": "configuration_cam_joint.CamJointConfig",
    "AutoModel": "modeling_cam_joint.CamJointModel",
    "AutoModelForImageClassification": "modeling_cam_joint.CamJointForImageClassification",
    "AutoModelForImageTextToText": "modeling_cam_joint.CamJointModel",
}


# ---------------------------------------------------------------------------------------------------- CAM targets
class ClassTarget:
    """y = the logit of class `classes[i]` for image i. dy/dz is the classifier's weight row (f_class is linear)."""

    def __init__(self, classes: Tensor):
        self.classes = classes

    def __call__(self, model: "CamJointPreTrainedModel", image_embeds: Tensor, create_graph: bool = False,
                 detach_weights: bool = True) -> Tensor:
        weight = model.classifier.weight
        return (weight.detach() if detach_weights else weight)[self.classes]


class AllClassesTarget:
    """y_k = the logit of EVERY class k for every image: (num_labels, B, D) sensitivities, the classifier's weight
    rows (the evidence guidance loss looks at every class's map, not only the answer's)."""

    def __call__(self, model: "CamJointPreTrainedModel", image_embeds: Tensor, create_graph: bool = False,
                 detach_weights: bool = True) -> Tensor:
        weight = model.classifier.weight
        weight = weight.detach() if detach_weights else weight
        return weight[:, None, :].expand(-1, image_embeds.shape[0], -1)


class CaptionTarget:
    """y = log P(caption | z), the teacher-forced score of each image's caption (`reduction`: sum or mean), or with
    `reduction="discriminative"` the sum of its token log-probabilities weighted by how much each word tells class
    `classes[i]` (`model.caption_word_weights`)."""

    def __init__(self, caption_ids: Tensor, reduction: str = "sum", classes: Tensor | None = None):
        self.caption_ids, self.reduction, self.classes = caption_ids, reduction, classes

    def scores(self, model: "CamJointPreTrainedModel", image_embeds: Tensor, detach_weights: bool) -> Tensor:
        logits = _call_captioner(model, detach_weights, "forward", self.caption_ids, image_embeds=image_embeds).logits
        log_probs, mask = token_log_probs(logits, self.caption_ids, model.config.pad_token_id)
        weights = model.caption_token_weights(self.caption_ids, self.classes, self.reduction)
        return caption_score(log_probs, mask, self.reduction, weights)

    def __call__(self, model, image_embeds: Tensor, create_graph: bool = False, detach_weights: bool = True) -> Tensor:
        image_embeds = _leaf_if_needed(image_embeds)
        (sensitivity,) = torch.autograd.grad(self.scores(model, image_embeds, detach_weights).sum(), image_embeds,
                                             create_graph=create_graph)
        return sensitivity


class WordTarget(CaptionTarget):
    """One target per caption word: y_t = log P(w_t | w_<t, z). Returns (T-1, B, D) sensitivities."""

    def __call__(self, model, image_embeds: Tensor, create_graph: bool = False, detach_weights: bool = True) -> Tensor:
        image_embeds = _leaf_if_needed(image_embeds)
        logits = _call_captioner(model, detach_weights, "forward", self.caption_ids, image_embeds=image_embeds).logits
        log_probs, _ = token_log_probs(logits, self.caption_ids, model.config.pad_token_id)
        rows = [torch.autograd.grad(log_probs[:, t].sum(), image_embeds, retain_graph=True,
                                    create_graph=create_graph)[0] for t in range(log_probs.shape[1])]
        return torch.stack(rows)


class GreedyCaptionTarget:
    """y = log P(greedy caption | z): the caption is decoded and scored in ONE pass (decoded with its graph), capped
    at `max_length` tokens. After a call, `caption_ids` holds the decoded captions."""

    def __init__(self, max_length: int, reduction: str = "sum", classes: Tensor | None = None):
        self.max_length, self.reduction, self.classes, self.caption_ids = max_length, reduction, classes, None

    def __call__(self, model, image_embeds: Tensor, create_graph: bool = False, detach_weights: bool = True) -> Tensor:
        image_embeds = _leaf_if_needed(image_embeds)
        self.caption_ids, log_probs, mask = _call_captioner(model, detach_weights, "decode", image_embeds,
                                                            self.max_length)
        weights = model.caption_token_weights(self.caption_ids, self.classes, self.reduction)
        (sensitivity,) = torch.autograd.grad(caption_score(log_probs, mask, self.reduction, weights).sum(),
                                             image_embeds, create_graph=create_graph)
        return sensitivity


class AnswerAndPredictedCaptionTargets:
    """The answer caption's and the predicted caption's targets in ONE teacher-forced pass over 2B rows (z twice):
    returns (2, B, D), answer first. The predicted caption is `predicted_ids`, or (None) the greedy caption,
    decoded without a graph first: its score is the same function of z whichever pass computes it, so the
    sensitivities are those of `CaptionTarget` + `GreedyCaptionTarget`, in one pass instead of a teacher-forced one
    and a step-by-step decoding one (the exact CAM loss: 2B rows with create_graph cost ~0.75x the two passes).
    Only exact where the captioner is deterministic (no dropout): dropout draws would differ between the passes.
    A discriminative score weighs the answer's words by `answer_classes` and the predicted caption's by
    `predicted_classes`, as the two separate targets do."""

    def __init__(self, answer_ids: Tensor, predicted_ids: Tensor | None, max_length: int, reduction: str = "sum",
                 answer_classes: Tensor | None = None, predicted_classes: Tensor | None = None):
        self.answer_ids, self.caption_ids = answer_ids, predicted_ids
        self.max_length, self.reduction = max_length, reduction
        self.classes = (None if answer_classes is None or predicted_classes is None
                        else torch.cat([answer_classes, predicted_classes]))

    def __call__(self, model, image_embeds: Tensor, create_graph: bool = False, detach_weights: bool = True) -> Tensor:
        if self.caption_ids is None:
            with torch.no_grad():
                self.caption_ids = model.captioner.decode(image_embeds.detach(), self.max_length)[0]
        pad, length = model.config.pad_token_id, max(self.answer_ids.shape[1], self.caption_ids.shape[1])
        both = torch.cat([nn.functional.pad(ids, (0, length - ids.shape[1]), value=pad)
                          for ids in (self.answer_ids, self.caption_ids)])
        sensitivity = CaptionTarget(both, self.reduction, self.classes)(model, torch.cat([image_embeds, image_embeds]),
                                                          create_graph=create_graph, detach_weights=detach_weights)
        return sensitivity.view(2, *image_embeds.shape)


CamTarget = Union[Tensor, Callable[..., Tensor]]


class _CaptionerMethod(nn.Module):
    """A captioner method as a module call, so `torch.func.functional_call` can run it on detached weights."""

    def __init__(self, captioner: nn.Module, method: str):
        super().__init__()
        self.captioner, self.method = captioner, method

    def forward(self, *args, **kwargs):
        return getattr(self.captioner, self.method)(*args, **kwargs)


def _call_captioner(model, detach_weights: bool, method: str, *args, **kwargs):
    """`model.captioner.<method>(...)`; with `detach_weights`, on detached copies of its parameters, so that a loss
    built on the result trains f_medi through z but never the captioner (Algorithm 1 line 16)."""
    if not detach_weights:
        return getattr(model.captioner, method)(*args, **kwargs)
    detached = {f"captioner.{name}": p.detach() for name, p in model.captioner.named_parameters()}
    return torch.func.functional_call(_CaptionerMethod(model.captioner, method), detached, args, kwargs)


def _leaf_if_needed(tensor: Tensor) -> Tensor:
    return tensor if tensor.requires_grad else tensor.detach().requires_grad_()


# ---------------------------------------------------------------------------------------------------- the encoder
def create_encoder(config: CamJointConfig, pretrained: bool) -> nn.Module:
    """f_encode: the timm CNN of `config.encoder_name` (with `encoder_kwargs`), without its classifier and pooling,
    pruned after `encoder_feature_stage` when that is set. `pretrained`: timm's weights, from `encoder_weights`
    when that names a local checkpoint, else timm's own source (a download)."""
    kwargs = dict(config.encoder_kwargs or {})
    if pretrained and config.encoder_weights:
        kwargs["pretrained_cfg_overlay"] = {"file": str(_weights_file(config.encoder_weights))}
    try:
        encoder = timm.create_model(config.encoder_name, pretrained=pretrained, num_classes=0, global_pool="",
                                    in_chans=getattr(config, "num_channels", 3), **kwargs)
    except Exception as error:
        if not (pretrained and config.encoder_weights):
            raise
        raise ValueError(f"encoder weights {config.encoder_weights} could not be loaded into encoder "
                         f"{config.encoder_name!r} (another architecture, or a damaged file?): "
                         f"{_first_lines(error)}") from error
    stage = config.encoder_feature_stage
    if stage is not None:
        stages = len(getattr(encoder, "feature_info", []) or [])
        if not hasattr(encoder, "prune_intermediate_layers") or not 0 <= stage < stages:
            raise ValueError(f"CamJointConfig.encoder_feature_stage={stage} does not fit encoder "
                             f"{config.encoder_name!r}: it has {stages} feature stages and "
                             f"{'no' if not hasattr(encoder, 'prune_intermediate_layers') else 'its'} timm "
                             f"forward_intermediates support")
        encoder.prune_intermediate_layers(indices=[stage], prune_norm=True, prune_head=True)
    return encoder


def _weights_file(path: str) -> Path:
    """The checkpoint file of `encoder_weights`: the file itself, or the weights file of a timm folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"encoder weights folder {path} holds no model.safetensors or pytorch_model.bin")
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    if path.suffix not in (".safetensors", ".pth", ".bin", ".pt"):
        raise ValueError(f"encoder weights {path}: expected a .safetensors, .pth, .bin or .pt file")
    return path


def _first_lines(error: Exception, count: int = 3) -> str:
    """An error's message cut to its first lines: timm lists every missing key, which can run to hundreds."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:count])
    return text[:600] + (" ..." if len(text) > 600 or len(lines) > count else "")


def encoder_channels(encoder: nn.Module, config: CamJointConfig) -> int:
    """C, the channels of A."""
    if config.encoder_feature_stage is None:
        return encoder.num_features
    return encoder.feature_info[config.encoder_feature_stage]["num_chs"]


# ---------------------------------------------------------------------------------------------------- base classes
class CamJointPreTrainedModel(PreTrainedModel):
    """Weights init and loading shared by the family, and the image path (encoder -> A -> p -> z) and Grad-CAM
    that every class with an image path has."""

    config_class = CamJointConfig
    config: CamJointConfig
    base_model_prefix = "cam_joint"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = ["CamJointLSTMCaptioner"]
    # The memory format pixels enter the encoder in (not a config field: it changes speed, not the model).
    encoder_memory_format: torch.memory_format = torch.channels_last

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As PreTrainedModel's, but weights that do not fit the config raise (Transformers 5 only logs missing /
        unexpected keys and random-initialises them), and the encoder's freeze state survives loading (the loader
        re-creates every parameter with requires_grad=True). Parts a class does not build (the captioner for the
        classifier) are `_keys_to_ignore_on_load_unexpected`."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        # Mismatched shapes are loaded "ignored" here so that the error below can name them (Transformers raises a
        # RuntimeError pointing at a printed table instead).
        user_ignores = kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, ignore_mismatched_sizes=True,
                                              **kwargs)
        bad = {name: sorted(str(k) for k in (info.get(name) or ())) for name in ("missing_keys", "unexpected_keys")}
        if not user_ignores:
            bad["mismatched_keys"] = [f"{key} {tuple(old)} in the checkpoint, {tuple(new)} here"
                                      for key, old, new in (info.get("mismatched_keys") or ())]
        bad = {name: keys for name, keys in bad.items() if keys}
        if bad:
            details = "; ".join(f"{len(keys)} {name.replace('_', ' ')} (e.g. {', '.join(keys[:3])})"
                                for name, keys in bad.items())
            raise ValueError(f"the checkpoint's weights do not fit this {cls.__name__} (encoder "
                             f"{model.config.encoder_name!r}): {details}. Check encoder_name, encoder_kwargs and "
                             f"the sizes in the config.")
        if hasattr(model, "encoder"):
            model.set_encoder_trainable(not model.config.freeze_encoder)
        if getattr(model, "generation_config", None) is not None:
            _never_generate_special_tokens(model.generation_config, model.config)  # checkpoints saved before too
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The timm encoder initialises itself (or is loaded from a checkpoint / ImageNet): Transformers' generic
        # init would reset its convolutions and BatchNorm running statistics. Only recompute timm's non-persistent
        # buffers, which a checkpoint does not hold and which `from_pretrained` leaves uninitialised.
        if getattr(module, "_is_timm_encoder_module", False):
            if hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()
            return
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ building
    def _build_image_path(self, config: CamJointConfig) -> int:
        """encoder, feature_map (the hookable layer whose output is A) and f_medi; returns the size of z."""
        self.encoder = create_encoder(config, pretrained=False)
        channels = encoder_channels(self.encoder, config)
        if config.encoder_channels is not None and config.encoder_channels != channels:
            raise ValueError(f"CamJointConfig.encoder_channels={config.encoder_channels} does not fit encoder "
                             f"{config.encoder_name!r}, whose last feature map has {channels} channels")
        config.encoder_channels = channels
        for module in self.encoder.modules():
            module._is_timm_encoder_module = True
        # A named attachment point whose output is A: `target_layers=[model.feature_map]` for Grad-CAM libraries.
        self.feature_map = nn.Identity()
        if not config.has_intermediate:
            return channels
        self.intermediate = nn.Sequential(nn.Linear(channels, config.intermediate_size),
                                          ACT2FN[_ACT2FN_NAMES.get(config.intermediate_activation,
                                                                   config.intermediate_activation)])
        return config.intermediate_size

    # ------------------------------------------------------------------ encoder
    def set_encoder_trainable(self, trainable: bool) -> None:
        self.config.freeze_encoder = not trainable
        self.encoder.requires_grad_(trainable)
        if not trainable:
            self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "encoder", None) is not None and self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics: its features must not drift
        return self

    def load_pretrained_encoder(self, weights: str | None = None) -> None:
        """Load the encoder's pretrained weights: from `weights` (or `config.encoder_weights`), a local timm
        checkpoint, else timm's ImageNet weights (downloaded once: the only place weights are ever fetched)."""
        if weights is not None:
            self.config.encoder_weights = str(weights)
        self.encoder.load_state_dict(create_encoder(self.config, pretrained=True).state_dict())

    def encoder_data_config(self) -> dict:
        """timm's preprocessing for this encoder (input size, interpolation, mean, std, crop)."""
        return timm.data.resolve_data_config({}, model=self.encoder)

    # ------------------------------------------------------------------ image path
    def get_feature_maps(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None) -> Tensor:
        """A: the encoder's last feature map (B, C, h, w), from pixels or from cached feature maps."""
        if feature_maps is not None:
            if feature_maps.ndim != 4 or feature_maps.shape[1] != self.config.encoder_channels:
                raise ValueError(f"feature_maps must have shape (batch, {self.config.encoder_channels}, h, w) for "
                                 f"encoder {self.config.encoder_name!r}, got {tuple(feature_maps.shape)}")
            return self.feature_map(feature_maps.to(self.dtype))
        if pixel_values is None:
            raise ValueError("pass pixel_values (images) or feature_maps (cached encoder features)")
        expected = getattr(self.config, "num_channels", 3)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != expected:
            raise ValueError(f"pixel_values must have shape (batch, {expected}, height, width), got "
                             f"{tuple(pixel_values.shape)}")
        # channels_last inputs: oneDNN's convolutions (forward and backward) then run NHWC end to end, 1.3-1.4x
        # faster for resnet10t on CPU; the weights stay NCHW (converting them too measured slower). Same results
        # to float rounding; `encoder_memory_format = torch.contiguous_format` restores NCHW.
        pixel_values = pixel_values.to(self.dtype, memory_format=self.encoder_memory_format)
        stage = self.config.encoder_feature_stage
        if stage is None:
            maps = self.encoder.forward_features(pixel_values)
        else:
            maps = self.encoder.forward_intermediates(pixel_values, indices=[stage], intermediates_only=True)[0]
        if torch.is_grad_enabled() and not maps.requires_grad:
            # A frozen encoder's A carries no graph; a Grad-CAM library hooking `feature_map` needs its gradient.
            maps = maps.detach().requires_grad_()
        if maps.ndim != 4:
            raise ValueError(f"encoder {self.config.encoder_name!r} returns features of shape {tuple(maps.shape)}; "
                             f"CamJoint needs a CNN feature map (B, C, h, w)")
        return self.feature_map(maps)

    def image_vector(self, pooled: Tensor) -> Tensor:
        """z = f_medi(p) (p itself for the variants without an intermediate layer)."""
        return self.intermediate(pooled) if self.config.has_intermediate else pooled

    def get_image_features(self, pixel_values: Tensor | None = None,
                           feature_maps: Tensor | None = None) -> CamJointVisionOutput:
        """A, p = GAP(A) and z = f_medi(p) for images (or their cached feature maps)."""
        maps = self.get_feature_maps(pixel_values, feature_maps)
        pooled = maps.mean((2, 3))
        return CamJointVisionOutput(feature_maps=maps, pooled_features=pooled, image_embeds=self.image_vector(pooled))

    def get_image_embeds(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None) -> Tensor:
        """z for images (or their cached feature maps)."""
        return self.get_image_features(pixel_values, feature_maps).image_embeds

    # ------------------------------------------------------------------ Grad-CAM
    def cam_maps(self, feature_maps: Tensor, targets: Sequence[CamTarget], *, create_graph: bool = False,
                 through_features: bool = False, second_order: bool = True, image_embeds: Tensor | None = None,
                 method: str | None = None, relu: bool | None = None) -> Tensor:
        """The maps (K, B, h, w) of K targets per image on feature maps A, by `method` (default `config.cam_method`).

        Args:
            targets: each a sensitivity dy/dz (B, D) already computed, or a callable target (`ClassTarget`,
                `CaptionTarget`, `WordTarget`, `GreedyCaptionTarget`) giving one (or (T, B, D) for `WordTarget`).
            create_graph: keep the graph so the maps can be differentiated (the CAM loss).
            through_features: the maps keep their graph to A (and so to the encoder); else A and p are detached.
            second_order: targets are evaluated at z = f_medi(p) with their graph (their sensitivity is a function of
                f_medi); else at the constant `image_embeds` (first order). Only matters with `create_graph`.
            image_embeds: z as the forward pass computed it (first-order targets read it, detached).
            relu: apply Grad-CAM's ReLU (default `config.cam_relu`); `False` gives the signed maps.
        """
        with torch.enable_grad():
            source = feature_maps if through_features else feature_maps.detach()
            pooled = source.mean((2, 3))
            pooled = pooled if (through_features and pooled.requires_grad) else pooled.detach().requires_grad_()
            if second_order or image_embeds is None:
                z = self.image_vector(pooled)
            else:
                z = image_embeds.detach()
            sensitivities = []
            for target in targets:
                s = target if isinstance(target, Tensor) else target(
                    self, z, create_graph=create_graph and second_order, detach_weights=not through_features)
                sensitivities.append(s if s.ndim == 3 else s[None])
            sensitivity = torch.cat(sensitivities).to(pooled.dtype)
            grads = pooled_gradient(pooled, self.image_vector, sensitivity, create_graph=create_graph)
            relu = self.config.cam_relu if relu is None else relu
            return get_cam_method(method or self.config.cam_method)(source, grads, relu=relu)

    def grad_cam(self, pixel_values: Tensor | None = None, labels: Tensor | None = None,
                 caption_ids: Tensor | None = None, create_graph: bool = False,
                 feature_maps: Tensor | None = None, per_word: bool = False, method: str | None = None,
                 caption_classes: Tensor | None = None) -> Tensor:
        """Class-activation maps over the encoder's last feature map, one target per image.

        Args:
            pixel_values / feature_maps: the images, or their cached feature maps.
            labels: class ids (B,): maps for those classes' logits (the classifier's evidence).
            caption_ids: captions (B, T) starting with bos: maps for log P(caption | image) (the captioner's
                evidence). Exactly one of `labels` / `caption_ids`.
            create_graph: keep the graph so the maps can be differentiated (as the CAM loss does).
            per_word: with `caption_ids`, one map per caption word (the log-probability of that word): (B, T-1, h, w).
            method: a name of `cam_core.CAM_METHODS` (default `config.cam_method`, Grad-CAM).
            caption_classes: with `config.cam_caption_target="discriminative"`, the class (B,) whose word weights
                score each caption; default the classifier's predicted class (what a user without a label sees,
                and what the greedy caption of the training loss is weighted by).

        Returns:
            (B, h, w) maps (or (B, T-1, h, w) with `per_word`), float32, ReLU applied if `config.cam_relu`.
        """
        if (labels is None) == (caption_ids is None):
            raise ValueError("grad_cam needs exactly one target: labels (class ids) or caption_ids (captions)")
        maps = self.get_feature_maps(pixel_values, feature_maps)
        if labels is not None:
            if getattr(self, "classifier", None) is None:
                raise ValueError(f"variant {self.config.variant!r} has no classifier: use caption_ids")
            self._check_labels(labels)
            target = ClassTarget(labels)
        else:
            if getattr(self, "captioner", None) is None:
                raise ValueError(f"variant {self.config.variant!r} has no captioner: use labels")
            self._check_caption_ids(caption_ids)
            if per_word:
                target = WordTarget(caption_ids, self.config.cam_caption_target)
            else:
                if self.config.cam_caption_target == "discriminative" and caption_classes is None:
                    caption_classes = self.predicted_classes(maps)
                target = CaptionTarget(caption_ids, self.config.cam_caption_target, caption_classes)
        cams = self.cam_maps(maps, [target], create_graph=create_graph, through_features=create_graph,
                             method=method)
        return cams.transpose(0, 1) if per_word else cams[0]

    @torch.no_grad()
    def predicted_classes(self, feature_maps: Tensor) -> Tensor:
        """The classifier's argmax class for feature maps A (B,)."""
        return self.classifier(self.image_vector(feature_maps.mean((2, 3)))).argmax(-1)

    def caption_token_weights(self, caption_ids: Tensor, classes: Tensor | None, reduction: str) -> Tensor | None:
        """w[c_i, token] of each caption token after bos (B, T-1) for `reduction="discriminative"`, else None.

        Raises if the model asks for discriminative weights it was never given (a buffer still NaN): a score that
        silently weighted every word 0 would give all-zero caption maps."""
        if reduction != "discriminative":
            return None
        weights = getattr(self, "caption_word_weights", None)
        if weights is None or classes is None:
            raise ValueError("cam_caption_target='discriminative' needs the model's caption_word_weights and the "
                             "class of each caption")
        if torch.isnan(weights).any():
            raise ValueError("cam_caption_target='discriminative' but the model's caption_word_weights were never "
                             "set: compute them from the training captions (cam_joint.discriminative_words."
                             "positive_pmi_word_weights) and call model.set_caption_word_weights(...)")
        return weights[classes].gather(1, caption_ids[:, 1:]).to(caption_ids.device)

    # ------------------------------------------------------------------ input checks
    def _check_caption_ids(self, input_ids: Tensor) -> None:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_caption_length:
            raise ValueError(f"captions of {input_ids.shape[1]} tokens are longer than the model's "
                             f"max_caption_length={self.config.max_caption_length}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.config.vocab_size)][0].item()
            raise ValueError(f"caption token id {bad} is outside the vocabulary (vocab_size={self.config.vocab_size})")

    def _check_labels(self, labels: Tensor) -> None:
        if getattr(self, "classifier", None) is None:
            return
        if labels.ndim != 1:
            raise ValueError(f"labels must be class ids of shape (batch,), got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_labels):
            bad = labels[(labels < 0) | (labels >= self.config.num_labels)][0].item()
            raise ValueError(f"class id {bad} is unknown: the model has {self.config.num_labels} classes "
                             f"(0..{self.config.num_labels - 1})")

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One checkpoint serves every Auto class: write them all, whichever class is being saved.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------- the family
class CamJointVisionModel(CamJointPreTrainedModel):
    """The image path alone: encoder -> A -> p = GAP(A) -> z = f_medi(p). Loads from any CamJoint checkpoint."""

    _keys_to_ignore_on_load_unexpected = [r"^classifier\.", r"^captioner\.", r"^caption_word_weights$"]

    def __init__(self, config: CamJointConfig):
        super().__init__(config)
        self._build_image_path(config)
        self.set_encoder_trainable(not config.freeze_encoder)
        self.post_init()

    def forward(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> CamJointVisionOutput:
        return self.get_image_features(pixel_values, feature_maps)


class CamJointForImageClassification(CamJointPreTrainedModel):
    """The classifier: encoder -> f_medi -> f_class (`pipeline("image-classification")`, pytorch-grad-cam)."""

    _keys_to_ignore_on_load_unexpected = [r"^captioner\.", r"^caption_word_weights$"]

    def __init__(self, config: CamJointConfig):
        super().__init__(config)
        if not config.has_classifier:
            raise ValueError(f"variant {config.variant!r} has no classifier: load it with AutoModel (CamJointModel)")
        image_size = self._build_image_path(config)
        self.classifier = nn.Linear(image_size, config.num_labels)
        self.set_encoder_trainable(not config.freeze_encoder)
        self.post_init()

    def forward(self, pixel_values: Tensor | None = None, labels: Tensor | None = None,
                feature_maps: Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> ImageClassifierOutput:
        logits = self.classifier(self.get_image_embeds(pixel_values, feature_maps))
        loss = None
        if labels is not None:
            self._check_labels(labels)
            loss = joint_losses(self, CamJointOutput(logits=logits), labels, None)["class_loss"]
        return ImageClassifierOutput(loss=loss, logits=logits)

    def generate(self, *args, **kwargs):
        raise TypeError("CamJointForImageClassification only classifies; to caption, load the checkpoint with "
                        "AutoModel.from_pretrained(..., trust_remote_code=True) (CamJointModel), which generates")


class CamJointModel(CamJointPreTrainedModel, GenerationMixin):
    """Encoder + optional intermediate layer + classifier + captioner, with Grad-CAM maps and the CAM loss.

    `forward(pixel_values=..., labels=..., input_ids=...)` returns class scores as `logits`, caption scores as
    `caption_logits`, and the losses the given targets allow. `generate(pixel_values=...)` captions through
    Transformers' generation loop (greedy, beam search, sampling, logits processors, stopping criteria), run by
    `model.captioner`.
    """

    # The exact CAM loss scores the answer and the predicted caption in one 2B-row pass (False: two passes, as
    # before; the same values, for benchmarks). Not a config field: it changes speed, not the model.
    batched_caption_targets: bool = True

    def __init__(self, config: CamJointConfig):
        super().__init__(config)
        image_size = self._build_image_path(config)
        self.classifier = nn.Linear(image_size, config.num_labels) if config.has_classifier else None
        if config.captioner_type not in CAPTIONERS:
            raise ValueError(f"CamJointConfig.captioner_type={config.captioner_type!r} is not one of "
                             f"{', '.join(CAPTIONERS)}")
        self.captioner = CAPTIONERS[config.captioner_type](config, image_size) if config.has_captioner else None
        if config.cam_caption_target == "discriminative":
            # w[class, word], fixed at the start of training from the training captions and saved with the weights,
            # so every map of a checkpoint (training, grad_cam, explain, the demo) weighs words alike. NaN until set:
            # using it unset raises instead of weighting every word 0.
            self.register_buffer("caption_word_weights",
                                 torch.full((config.num_labels, config.vocab_size), float("nan")), persistent=True)
        self.set_encoder_trainable(not config.freeze_encoder)
        self.post_init()
        if self.generation_config is not None:
            _never_generate_special_tokens(self.generation_config, config)
            self.generation_config.max_length = config.max_caption_length
            if config.variant == "semantic":
                self.generation_config.num_beams = 3  # beam width 3 at inference (Liu et al. 2017)

    def forward(
        self,
        pixel_values: Tensor | None = None,
        input_ids: Tensor | None = None,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        feature_maps: Tensor | None = None,
        concept_labels: Tensor | None = None,
        guide_masks: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CamJointOutput:
        r"""
        Args:
            pixel_values: images (B, 3, H, W), preprocessed by the processor.
            input_ids: caption token ids (B, T) starting with bos (teacher forcing); padding = `pad_token_id`.
            labels: class ids (B,).
            attention_mask: 1 for caption tokens, 0 for padding (optional: padding is read from `pad_token_id`).
            feature_maps: the encoder's feature maps (B, C, h, w) instead of pixels (frozen-encoder feature cache).
            concept_labels: multi-hot concept targets (B, num_concepts) for `variant="semantic"`.
            guide_masks: the ground-truth deciding-parts masks (B, H, W) in [0, 1] at the input's size, for
                `config.cam_guide="mask"` (the mask oracle).
        """
        if input_ids is not None:
            self._check_caption_ids(input_ids)
        if labels is not None:
            self._check_labels(labels)
        image = self.get_image_features(pixel_values, feature_maps)
        z = image.image_embeds
        out = CamJointOutput(image_embeds=z, feature_maps=image.feature_maps)
        if self.classifier is not None:
            out.logits = self.classifier(z)
        if self.config.variant == "semantic":
            out.concept_probs = z
        if self.captioner is not None and input_ids is not None:
            caption = self.captioner(input_ids, image_embeds=z)
            out.caption_logits, out.cache = caption.logits, caption.cache
        losses = joint_losses(self, out, labels, input_ids, attention_mask, concept_labels, guide_masks)
        for name, value in losses.items():
            setattr(out, name, value)
        out.loss = weighted_sum(self.config, losses)
        return out

    def set_caption_word_weights(self, weights: Tensor) -> None:
        """Fix w[class, word] of the discriminative caption score (`config.cam_caption_target="discriminative"`)."""
        expected = (self.config.num_labels, self.config.vocab_size)
        if getattr(self, "caption_word_weights", None) is None:
            raise ValueError(f"caption word weights are for cam_caption_target='discriminative'; this model's is "
                             f"{self.config.cam_caption_target!r}")
        if tuple(weights.shape) != expected or not torch.isfinite(weights).all():
            raise ValueError(f"caption word weights must be finite, of shape (num_labels, vocab_size) = {expected}, "
                             f"got shape {tuple(weights.shape)}")
        self.caption_word_weights.copy_(weights)

    # ------------------------------------------------------------------ the disagreement loss's maps
    def disagreement_maps(self, feature_maps: Tensor, image_embeds: Tensor, class_logits: Tensor, labels: Tensor,
                          input_ids: Tensor, log_probs: Tensor | None = None, mask: Tensor | None = None,
                          gradient_mode: str | None = None, predicted_labels: Tensor | None = None,
                          predicted_caption_ids: Tensor | None = None) -> Tensor:
        """The four maps of eq. 6, stacked (4, B, h, w): classifier answer / predicted class, captioner answer /
        predicted (greedy) caption; differentiable with the routing of `config.cam_trains`.

        `exact` (`config.cam_gradient_mode`): every head sensitivity is a function of z = f_medi(p), so L_cam also
        reaches f_medi through the LSTM's second-order term. `first_order`: sensitivities are constants; the answer
        caption's comes from the teacher-forced pass that gave `log_probs` (when given), the predicted caption is
        decoded and scored in one pass. `predicted_labels` / `predicted_caption_ids` hold the "p" targets fixed
        instead of re-choosing them from the current model (argmax class, greedy caption): with both fixed, L_cam is
        a smooth function of f_medi.
        """
        cfg = self.config
        exact = (gradient_mode or cfg.cam_gradient_mode) == "exact"
        if cfg.cam_predicted_targets == "answer" and predicted_labels is None and predicted_caption_ids is None:
            predicted_labels, predicted_caption_ids = labels, input_ids
        predicted_class = (class_logits.argmax(-1) if predicted_labels is None else predicted_labels).detach()
        answer = self._answer_caption_target(image_embeds, labels, input_ids, log_probs, mask, exact)
        # A discriminative score weighs the predicted caption's words by the PREDICTED class: both "p" targets are
        # the model's own answer, as grad_cam / explain weigh a caption without a label.
        target = cfg.cam_caption_target
        predicted: CamTarget = (GreedyCaptionTarget(input_ids.shape[1], target, predicted_class)
                                if predicted_caption_ids is None
                                else CaptionTarget(predicted_caption_ids, target, predicted_class))
        targets = [ClassTarget(labels), ClassTarget(predicted_class), answer, predicted]
        if exact and self.batched_caption_targets and not (self.training and cfg.dropout > 0):
            targets[2:] = [AnswerAndPredictedCaptionTargets(input_ids, predicted_caption_ids, input_ids.shape[1],
                                                            target, labels, predicted_class)]
        return self.cam_maps(feature_maps, targets, create_graph=True, through_features=cfg.cam_trains == "all",
                             second_order=exact, image_embeds=image_embeds)

    def _answer_caption_target(self, image_embeds: Tensor, labels: Tensor, input_ids: Tensor,
                               log_probs: Tensor | None, mask: Tensor | None, exact: bool) -> CamTarget:
        """The answer caption's target, its words weighed (discriminative score) by the answer class."""
        reduction = self.config.cam_caption_target
        if not exact and log_probs is not None and image_embeds.requires_grad:
            # The caption loss's own teacher-forced pass already holds log P(answer | z): its gradient is the
            # sensitivity, no second pass through the captioner.
            weights = self.caption_token_weights(input_ids, labels, reduction)
            score = caption_score(log_probs, mask, reduction, weights)
            (sensitivity,) = torch.autograd.grad(score.sum(), image_embeds, retain_graph=True)
            return sensitivity
        return CaptionTarget(input_ids, reduction, labels)

    # ------------------------------------------------------------------ the guidance losses' maps
    def guidance_maps(self, feature_maps: Tensor, image_embeds: Tensor, labels: Tensor,
                      input_ids: Tensor | None = None, guide_masks: Tensor | None = None,
                      log_probs: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The classifier's maps and their fixed guide for a one-way guidance loss (`config.cam_guide` "captioner"
        or "mask"), with the routing of `config.cam_trains` on the classifier's side only.

        Returns:
            maps: `cam_guidance_loss="cosine"`: the answer class's map (1, B, h, w) by `config.cam_method` and
                `cam_relu`; `"evidence"`: every class's SIGNED Grad-CAM (num_labels, B, h, w), sum_c a_kc A_c
                without ReLU, whose spatial sum is the class logit's first-order contribution through f_medi.
            guide: (B, h, w), no graph. The mask oracle: `guide_masks` area-averaged to h x w. The captioner as
                teacher: its answer-caption map (min-max normalised to [0, 1] for `evidence`), detached, so neither
                the captioner nor the captioner-side path of f_medi learns from the loss.
        """
        cfg = self.config
        through_features = cfg.cam_trains == "all"
        if cfg.cam_guidance_loss == "evidence":
            maps = self.cam_maps(feature_maps, [AllClassesTarget()], create_graph=True,
                                 through_features=through_features, method="gradcam", relu=False)
        else:
            maps = self.cam_maps(feature_maps, [ClassTarget(labels)], create_graph=True,
                                 through_features=through_features)
        if cfg.cam_guide == "mask":
            if guide_masks is None:
                raise ValueError("cam_guide='mask' needs guide_masks (B, H, W): the deciding parts' ground-truth mask")
            guide = F.adaptive_avg_pool2d(guide_masks[:, None].to(maps.dtype), maps.shape[-2:])[:, 0]
            return maps, guide.detach()
        answer = self._answer_caption_target(image_embeds, labels, input_ids, log_probs, mask,
                                             cfg.cam_gradient_mode == "exact")
        guide = self.cam_maps(feature_maps, [answer], image_embeds=image_embeds, second_order=False)[0].detach()
        if cfg.cam_guidance_loss == "evidence":
            low, high = guide.amin((-2, -1), keepdim=True), guide.amax((-2, -1), keepdim=True)
            guide = (guide - low) / (high - low).clamp_min(1e-12)
        return maps, guide

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def greedy_captions(self, image_embeds: Tensor, max_length: int | None = None) -> Tensor:
        """Greedy decoding (bos, w1, ..., eos, pad...), batched, without the generation loop's bookkeeping."""
        return self.captioner.decode(image_embeds, max_length or self.config.max_caption_length)[0]

    @torch.no_grad()
    def generate(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None,
                 image_embeds: Tensor | None = None, **kwargs):
        """Caption images with Transformers' generation loop (all its strategies and options), run by the captioner.

        The image is encoded once, before beam expansion, and z travels in the captioner's cache: beams and samples
        never re-run the encoder.
        """
        if self.captioner is None:
            raise ValueError(f"variant {self.config.variant!r} has no captioner; it cannot generate captions")
        if image_embeds is None:
            image_embeds = self.get_image_embeds(pixel_values, feature_maps)
        kwargs.pop("attention_mask", None)  # prompts are bos only; a processor's text mask is not an LSTM input
        # The checkpoint's generation config (generation_config.json) is the joint model's: the captioner reads it.
        # The loop fills what a call's config leaves unset from the model's own (the captioner's): the checkpoint's
        # saved config, or, for options given as keyword arguments, a copy of it with them folded in.
        self.captioner.generation_config = self.generation_config
        if "generation_config" not in kwargs:
            kwargs = self._with_generation_config(kwargs)
            self.captioner.generation_config = kwargs["generation_config"]
        return self.captioner.generate(image_embeds=image_embeds, **kwargs)

    def _with_generation_config(self, kwargs: dict) -> dict:
        """This call's options folded into a copy of the saved generation config. The saved config sets max_length
        (the captions' longest); a call that asks for max_new_tokens instead means that, without Transformers'
        warning that both are set."""
        config = copy.deepcopy(self.generation_config)
        asked_new_tokens = "max_new_tokens" in kwargs and "max_length" not in kwargs
        model_kwargs = config.update(**kwargs)
        if asked_new_tokens:
            config.max_length = None
        return {**model_kwargs, "generation_config": config}


def _never_generate_special_tokens(generation_config, config: CamJointConfig) -> None:
    """pad and bos are never a caption's next word: suppressed in generation as `LSTMCaptioner.decode` does, so an
    untrained model cannot hide a pad inside a caption (decoding drops it and the caption looks shorter than it is)."""
    suppressed = [config.pad_token_id, config.bos_token_id]
    generation_config.suppress_tokens = sorted(set(generation_config.suppress_tokens or []) | set(suppressed))


# Saving writes `auto_map` and copies this file and its siblings, so a checkpoint loads with trust_remote_code.
CamJointModel.register_for_auto_class("AutoModel")
CamJointForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["CamJointModel", "CamJointForImageClassification", "CamJointVisionModel", "CamJointPreTrainedModel",
           "CamJointOutput", "CamJointVisionOutput", "LSTMCaptionCache", "ClassTarget", "AllClassesTarget",
           "CaptionTarget", "WordTarget",
           "GreedyCaptionTarget", "CAPTIONERS"]
