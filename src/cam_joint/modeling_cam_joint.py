"""CamJoint: fine-grained image classification and captioning trained jointly (Yoon et al., ETRI Journal 2020).

    image --f_encode--> A (B x C x h x w) --GAP--> p (B x C) --f_medi--> z (B x D) --f_class--> class logits
                                                                              \\--f_caption--> words (LSTM)

with the Grad-CAM disagreement loss of section 3.3 (eq. 6) pulling the classifier's and the captioner's evidence
together. Gradient routing follows Algorithm 1 (lines 15-17): f_class learns from L_class, f_caption from
L_caption, f_medi from all three. Routing is done by what each loss is computed from (detached parameters or
activations), so a training step stays ONE backward of ONE scalar (what DDP, gradient accumulation and mixed
precision rely on).

This file ships next to every checkpoint as remote code: it imports only torch, timm, transformers and its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.generation import utils as _generation_utils
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from .cam_core import CaptionTarget, at_least_float32, cam_from_pooled_gradient, disagreement_loss, pooled_gradient
from .configuration_cam_joint import CamJointConfig

AUTO_MAP = {
    "AutoConfig": "configuration_cam_joint.CamJointConfig",
    "AutoModel": "modeling_cam_joint.CamJointModel",
    "AutoModelForImageClassification": "modeling_cam_joint.CamJointForImageClassification",
    "AutoModelForImageTextToText": "modeling_cam_joint.CamJointModel",
}
# The generation loop's name for a model's cache: `cache` since Transformers 5.24; before it, `cache_params` for
# caches that are not key/value caches. The step output and `prepare_inputs_for_generation` speak whichever it reads
# (a `cache_params` dataclass field would not do: 5.24's ModelOutput renames it to `cache` and overwrites that).
GENERATION_CACHE_KEY = ("cache" if "cache" in getattr(_generation_utils, "ALL_CACHE_NAMES", ("cache",))
                        else "cache_params")
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}


@dataclass
class CamJointOutput(ModelOutput):
    """Output of [`CamJointModel`].

    Args:
        loss: weighted sum of the losses below that could be computed from the given targets.
        class_loss: cross-entropy of the class logits (eq. 1).
        caption_loss: mean token cross-entropy of the teacher-forced caption (eq. 2).
        cam_loss: CAM disagreement loss (eq. 6), averaged over the batch.
        concept_loss: binary cross-entropy of the concept probabilities, summed over the concepts and averaged over
            the images (`variant="semantic"`, eq. 5 of Liu et al. 2017).
        logits: class scores, (batch, num_labels).
        caption_logits: next-token scores of the teacher-forced caption, (batch, length, vocab_size).
        concept_probs: concept probabilities (`variant="semantic"`), (batch, num_concepts).
        image_embeds: z, the image vector both heads read, (batch, D).
        feature_maps: A, the encoder's last feature map, (batch, C, h, w).
        cache: the LSTM state after the last caption token (what `generate()` carries between steps).
        sampled_ids, sampled_log_probs, sampled_mask: with `self_critical=True`, one caption sampled per image
            (bos, w1, ..., eos, pad...), the log-probabilities of w1..eos WITH their graph, and their mask.
        greedy_ids: with `self_critical=True`, the greedy caption of each image (the baseline; no graph).
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
    cache: "LSTMCaptionCache | None" = None
    sampled_ids: Tensor | None = None
    sampled_log_probs: Tensor | None = None
    sampled_mask: Tensor | None = None
    greedy_ids: Tensor | None = None


@dataclass
class CamJointCaptionStepOutput(ModelOutput):
    """What Transformers' generation loop reads: next-token `logits` (batch, length, vocab) and the LSTM cache,
    under the name that loop reads (`GENERATION_CACHE_KEY`)."""

    logits: Tensor | None = None
    cache: "LSTMCaptionCache | None" = None


class LSTMCaptionCache:
    """The captioner's recurrent state between generation steps: h and c (layers, batch, hidden) and z (batch, D).

    Beam search reorders it with `index_select` along the batch dimension (dim 1 of h/c, dim 0 of z); without that
    reorder a beam would continue another beam's sentence, silently.
    """

    def __init__(self, hidden: Tensor, cell: Tensor, image_embeds: Tensor, gate_bias: Tensor | None = None):
        self.hidden, self.cell, self.image_embeds = hidden, cell, image_embeds
        self.gate_bias = gate_bias  # every_step conditioning: image_to_gates(z), computed once per caption

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.hidden = self.hidden.index_select(1, beam_idx.to(self.hidden.device))
        self.cell = self.cell.index_select(1, beam_idx.to(self.cell.device))
        self.image_embeds = self.image_embeds.index_select(0, beam_idx.to(self.image_embeds.device))
        if self.gate_bias is not None:
            self.gate_bias = self.gate_bias.index_select(0, beam_idx.to(self.gate_bias.device))


class LSTMLayer(nn.Module):
    """One LSTM layer written as an explicit loop over time steps (gate order i, f, g, o as in `nn.LSTM`).

    Why not `nn.LSTM`: the exact CAM loss differentiates through the LSTM's backward pass, which cuDNN cannot do
    ("Double backwards is not supported for CuDNN RNNs"), and under CPU bf16 autocast `nn.LSTM` goes to oneDNN, which
    fails. The loop is made of plain matmuls and pointwise ops, so the same code path runs on CPU and GPU, in fp32 and
    bf16, first and second order. The input projection of all time steps is one matmul; only the recurrence loops.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))

    def forward(self, inputs: Tensor, hidden: Tensor, cell: Tensor, gate_bias: Tensor | None = None,
                mask: Tensor | None = None):
        """inputs (B, T, In); hidden, cell (B, H); gate_bias (B, 4H) added at every step (LRCN conditioning);
        mask (B, T): where False (left padding of a batched prompt) the state is carried through unchanged."""
        projected = F.linear(inputs, self.weight_ih, self.bias)
        if gate_bias is not None:
            projected = projected + gate_bias.unsqueeze(1)
        outputs = []
        weight_hh_t = self.weight_hh.t()
        for step in range(inputs.shape[1]):
            gates = torch.addmm(projected[:, step], hidden, weight_hh_t)
            sig = torch.sigmoid(gates[:, : 3 * self.hidden_size])
            input_gate, forget_gate, output_gate = sig.chunk(3, 1)
            candidate = torch.tanh(gates[:, 3 * self.hidden_size:])
            new_cell = forget_gate * cell + input_gate * candidate
            new_hidden = output_gate * torch.tanh(new_cell)
            if mask is not None:
                keep = mask[:, step, None]
                new_cell, new_hidden = torch.where(keep, new_cell, cell), torch.where(keep, new_hidden, hidden)
            cell, hidden = new_cell, new_hidden
            outputs.append(hidden)
        return torch.stack(outputs, 1), hidden, cell


class LSTMCaptioner(nn.Module):
    """f_caption: an LSTM language model conditioned on the image vector z.

    Conditioning (`config.conditioning`): `every_step` (LRCN, z feeds every step's gates), `init_state` (z sets h0 and
    c0 through a linear layer, as in semantic regularisation) or `first_step` (Show-and-Tell: z, projected to a word
    embedding, is the input of step 0).
    """

    def __init__(self, config: CamJointConfig, image_size: int):
        super().__init__()
        self.config = config
        hidden, embed = config.hidden_size, config.word_embedding_size
        self.embed_tokens = nn.Embedding(config.vocab_size, embed, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(
            LSTMLayer(embed if i == 0 else hidden, hidden) for i in range(config.num_lstm_layers)
        )
        if config.conditioning == "every_step":
            self.image_to_gates = nn.Linear(image_size, 4 * hidden, bias=False)
        elif config.conditioning == "init_state":
            self.image_to_state = nn.Linear(image_size, 2 * config.num_lstm_layers * hidden)
        else:
            self.image_to_embedding = nn.Linear(image_size, embed)
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(hidden, config.vocab_size)

    def initial_state(self, image_embeds: Tensor) -> LSTMCaptionCache:
        batch, layers, hidden = image_embeds.shape[0], self.config.num_lstm_layers, self.config.hidden_size
        if self.config.conditioning == "init_state":
            state = torch.tanh(self.image_to_state(image_embeds)).view(batch, 2, layers, hidden)
            return LSTMCaptionCache(state[:, 0].transpose(0, 1), state[:, 1].transpose(0, 1), image_embeds)
        zeros = image_embeds.new_zeros(layers, batch, hidden)
        cache = LSTMCaptionCache(zeros, zeros, image_embeds)
        if self.config.conditioning == "first_step":
            _, cache = self.run(self.image_to_embedding(image_embeds).unsqueeze(1), cache)
        return cache

    def run(self, inputs: Tensor, cache: LSTMCaptionCache,
            mask: Tensor | None = None) -> tuple[Tensor, LSTMCaptionCache]:
        """Run the LSTM stack over input embeddings (B, T, E) from `cache`; returns outputs (B, T, H), new cache."""
        gate_bias = None
        if self.config.conditioning == "every_step":
            gate_bias = cache.gate_bias if cache.gate_bias is not None else self.image_to_gates(cache.image_embeds)
        hiddens, cells = [], []
        for index, layer in enumerate(self.layers):
            inputs, hidden, cell = layer(inputs, cache.hidden[index], cache.cell[index],
                                         gate_bias if index == 0 else None, mask)
            hiddens.append(hidden)
            cells.append(cell)
        return inputs, LSTMCaptionCache(torch.stack(hiddens), torch.stack(cells), cache.image_embeds, gate_bias)

    def forward(self, input_ids: Tensor, cache: LSTMCaptionCache | None = None,
                image_embeds: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, LSTMCaptionCache]:
        """Next-token logits (B, T, V) for `input_ids` (B, T), continuing from `cache` or starting from z."""
        if cache is None:
            cache = self.initial_state(image_embeds)
        outputs, cache = self.run(self.dropout(self.embed_tokens(input_ids)), cache, mask)
        return self.lm_head(self.dropout(outputs)), cache


    def decode(self, image_embeds: Tensor, max_length: int, bos: int, eos: int, pad: int, sample: bool = False):
        """Batched greedy decoding (or, with `sample`, multinomial sampling from the model's distribution) that also
        returns the chosen tokens' log-probabilities, with the autograd graph when grad is enabled: a caption's score
        comes out of the decoding pass itself, no second, teacher-forced pass over the same tokens. The CAM loss
        scores its predicted (greedy) caption this way; self-critical training its sampled one.

        Returns tokens (B, L) = bos, w1, ..., eos, pad...; token_log_probs and token_mask (B, L-1) for w1..eos.
        """
        batch = image_embeds.shape[0]
        tokens = torch.full((batch, 1), bos, dtype=torch.long, device=image_embeds.device)
        running = torch.ones(batch, dtype=torch.bool, device=image_embeds.device)
        cache = self.initial_state(image_embeds)
        log_probs, masks = [], []
        for _ in range(max_length - 1):
            logits, cache = self(tokens[:, -1:], cache)
            step_log_probs = torch.log_softmax(at_least_float32(logits[:, -1]), -1)
            if sample:
                next_token = torch.multinomial(step_log_probs.detach().exp(), 1).squeeze(1)
            else:
                next_token = step_log_probs.detach().argmax(-1)
            log_probs.append(step_log_probs.gather(1, next_token[:, None]).squeeze(1))
            masks.append(running)
            next_token = torch.where(running, next_token, torch.full_like(next_token, pad))
            tokens = torch.cat([tokens, next_token[:, None]], 1)
            running = running & (next_token != eos)
            if not bool(running.any()):
                break
        return tokens, torch.stack(log_probs, 1), torch.stack(masks, 1).to(log_probs[0].dtype)


class _GreedyScorer(nn.Module):
    """`LSTMCaptioner.decode` (greedy) as a module call, so `torch.func.functional_call` can run it on detached
    weights."""

    def __init__(self, captioner: LSTMCaptioner):
        super().__init__()
        self.captioner = captioner

    def forward(self, image_embeds, max_length, bos, eos, pad):
        return self.captioner.decode(image_embeds, max_length, bos, eos, pad)


class CamJointPreTrainedModel(PreTrainedModel):
    config_class = CamJointConfig
    config: CamJointConfig
    base_model_prefix = "cam_joint"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["LSTMCaptioner"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As PreTrainedModel's, but weights that do not fit the config raise (Transformers 5 only logs missing /
        unexpected keys and random-initialises them), and the encoder's freeze state survives loading (the loader
        re-creates every parameter with requires_grad=True)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        bad = {name: sorted(info.get(name) or ()) for name in ("missing_keys", "unexpected_keys")}
        bad = {name: keys for name, keys in bad.items() if keys}
        if bad:
            details = "; ".join(f"{len(keys)} {name.replace('_', ' ')} (e.g. {', '.join(keys[:3])})"
                                for name, keys in bad.items())
            raise ValueError(f"the checkpoint's weights do not fit this {cls.__name__} (encoder "
                             f"{model.config.encoder_name!r}): {details}. Check encoder_name and the sizes in the "
                             f"config.")
        model.set_encoder_trainable(not model.config.freeze_encoder)
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
        std = self.config.initializer_range
        if isinstance(module, LSTMLayer):
            bound = module.hidden_size ** -0.5  # nn.LSTM's default init
            nn.init.uniform_(module.weight_ih, -bound, bound)
            nn.init.uniform_(module.weight_hh, -bound, bound)
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.bias[module.hidden_size: 2 * module.hidden_size])  # forget-gate bias 1
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()


class CamJointModel(CamJointPreTrainedModel, GenerationMixin):
    """Encoder + optional intermediate layer + classifier + LSTM captioner, with Grad-CAM maps and the CAM loss.

    `forward(pixel_values=..., labels=..., input_ids=...)` returns class scores as `logits`, caption scores as
    `caption_logits`, and the losses the given targets allow. `generate(pixel_values=...)` captions through
    Transformers' generation loop (greedy, beam search, sampling, logits processors, stopping criteria).
    """

    def __init__(self, config: CamJointConfig):
        super().__init__(config)
        self.encoder = timm.create_model(config.encoder_name, pretrained=False, num_classes=0, global_pool="",
                                         in_chans=getattr(config, "num_channels", 3))
        channels = self.encoder.num_features
        if config.encoder_channels is not None and config.encoder_channels != channels:
            raise ValueError(f"CamJointConfig.encoder_channels={config.encoder_channels} does not fit encoder "
                             f"{config.encoder_name!r}, whose last feature map has {channels} channels")
        config.encoder_channels = channels
        for module in self.encoder.modules():
            module._is_timm_encoder_module = True
        # A named attachment point whose output is A: `target_layers=[model.feature_map]` for Grad-CAM libraries.
        self.feature_map = nn.Identity()
        image_size = channels
        if config.has_intermediate:
            self.intermediate = nn.Sequential(nn.Linear(channels, config.intermediate_size),
                                              _ACTIVATIONS[config.intermediate_activation]())
            image_size = config.intermediate_size
        self.classifier = nn.Linear(image_size, config.num_labels) if config.has_classifier else None
        self.captioner = LSTMCaptioner(config, image_size) if config.has_captioner else None
        self.set_encoder_trainable(not config.freeze_encoder)
        self.post_init()
        if self.generation_config is not None:
            self.generation_config.max_length = config.max_caption_length
            if config.variant == "semantic":
                self.generation_config.num_beams = 3  # beam width 3 at inference (Liu et al. 2017)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One checkpoint serves every Auto class: write them all, whichever class is being saved.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------ encoder
    def set_encoder_trainable(self, trainable: bool) -> None:
        self.config.freeze_encoder = not trainable
        self.encoder.requires_grad_(trainable)
        if not trainable:
            self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics: its features must not drift
        return self

    def load_pretrained_encoder(self) -> None:
        """Load the encoder's ImageNet weights from timm (downloads them once). The only place weights are fetched."""
        pretrained = timm.create_model(self.config.encoder_name, pretrained=True, num_classes=0, global_pool="")
        self.encoder.load_state_dict(pretrained.state_dict())

    def encoder_data_config(self) -> dict:
        """timm's preprocessing for this encoder (input size, interpolation, mean, std, crop)."""
        return timm.data.resolve_data_config({}, model=self.encoder)

    def get_feature_maps(self, pixel_values: Tensor) -> Tensor:
        """A: the encoder's last feature map (B, C, h, w)."""
        expected = getattr(self.config, "num_channels", 3)
        if pixel_values.ndim != 4 or pixel_values.shape[1] != expected:
            raise ValueError(f"pixel_values must have shape (batch, {expected}, height, width), got "
                             f"{tuple(pixel_values.shape)}")
        feature_maps = self.encoder.forward_features(pixel_values.to(self.dtype))
        if feature_maps.ndim != 4:
            raise ValueError(f"encoder {self.config.encoder_name!r} returns features of shape "
                             f"{tuple(feature_maps.shape)}; CamJoint needs a CNN feature map (B, C, h, w)")
        return self.feature_map(feature_maps)

    def _feature_maps(self, pixel_values: Tensor | None, feature_maps: Tensor | None) -> Tensor:
        if feature_maps is not None:
            if feature_maps.ndim != 4 or feature_maps.shape[1] != self.config.encoder_channels:
                raise ValueError(f"feature_maps must have shape (batch, {self.config.encoder_channels}, h, w) for "
                                 f"encoder {self.config.encoder_name!r}, got {tuple(feature_maps.shape)}")
            return self.feature_map(feature_maps.to(self.dtype))
        if pixel_values is None:
            raise ValueError("pass pixel_values (images) or feature_maps (cached encoder features)")
        return self.get_feature_maps(pixel_values)

    def image_vector(self, pooled: Tensor) -> Tensor:
        """z = f_medi(p) (p itself for the variants without an intermediate layer)."""
        return self.intermediate(pooled) if self.config.has_intermediate else pooled

    def get_image_embeds(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None) -> Tensor:
        return self.image_vector(self._feature_maps(pixel_values, feature_maps).mean((2, 3)))

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: Tensor | None = None,
        input_ids: Tensor | None = None,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        feature_maps: Tensor | None = None,
        image_embeds: Tensor | None = None,
        concept_labels: Tensor | None = None,
        cache: LSTMCaptionCache | None = None,
        caption_step: bool = False,
        teacher_concepts: bool = False,
        self_critical: bool = False,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CamJointOutput | CamJointCaptionStepOutput:
        r"""
        Args:
            pixel_values: images (B, 3, H, W), preprocessed by the processor.
            input_ids: caption token ids (B, T) starting with bos (teacher forcing); padding = `pad_token_id`.
            labels: class ids (B,).
            attention_mask: 1 for caption tokens, 0 for padding (optional: padding is read from `pad_token_id`).
            feature_maps: the encoder's feature maps (B, C, h, w) instead of pixels (frozen-encoder feature cache).
            image_embeds: z (B, D) instead of pixels (what `generate()` computes once and carries).
            concept_labels: multi-hot concept targets (B, num_concepts) for `variant="semantic"`.
            cache: LSTM state to continue from (generation).
            caption_step: used by `generate()`: return the captioner's next-token scores as `logits`, which is what
                Transformers' generation loop reads, and skip the classifier.
            teacher_concepts: `variant="semantic"`, stage 1 of its two-stage training (Liu et al. 2017, section 3.3):
                the captioner reads the ground-truth concept vector `concept_labels` instead of the predicted
                concepts, so the CNN (concept loss) and the LSTM (caption loss) are trained independently. No CAM
                loss then: the captioner does not look at the image.
            self_critical: self-critical sequence training (Rennie et al. 2017): instead of the teacher-forced
                caption loss, sample one caption per image (with the graph of its log-probabilities) and
                greedy-decode the baseline caption; both are returned (`sampled_*`, `greedy_ids`). The training
                loop adds the policy-gradient term, whose reward (CIDEr-D against the image's references) is
                computed outside the model. `loss` then holds the other losses (class, concept, CAM).
        """
        if caption_step:
            return self._caption_step(input_ids, pixel_values, feature_maps, image_embeds, cache)
        cfg = self.config
        if input_ids is not None:
            self._check_caption_ids(input_ids)
        if labels is not None:
            self._check_labels(labels)
        if teacher_concepts and (cfg.variant != "semantic" or concept_labels is None):
            raise ValueError("teacher_concepts (semantic stage-1 training) needs variant='semantic' and "
                             f"concept_labels; got variant={cfg.variant!r}, concept_labels "
                             f"{'given' if concept_labels is not None else 'missing'}")
        feature_maps = self._feature_maps(pixel_values, feature_maps) if image_embeds is None else None
        pooled = feature_maps.mean((2, 3)) if feature_maps is not None else None
        z = self.image_vector(pooled) if image_embeds is None else image_embeds
        out = CamJointOutput(image_embeds=z, feature_maps=feature_maps)
        losses = {}
        if self.classifier is not None:
            out.logits = self.classifier(z)
            if labels is not None:
                losses["class_loss"] = (cfg.class_loss_weight, F.cross_entropy(at_least_float32(out.logits), labels))
        if cfg.variant == "semantic":
            out.concept_probs = z
            if concept_labels is not None:
                if concept_labels.shape != z.shape:
                    raise ValueError(f"concept_labels must have shape (batch, num_concepts) = {tuple(z.shape)}, got "
                                     f"{tuple(concept_labels.shape)}")
                # Eq. 5 of Liu et al.: cross-entropy SUMMED over the K concepts (a mean over them would shrink each
                # concept's gradient K-fold, 1000-fold by default), averaged over the images of the batch.
                concept_bce = F.binary_cross_entropy(at_least_float32(z).clamp(1e-6, 1 - 1e-6),
                                                     concept_labels.float(), reduction="none")
                losses["concept_loss"] = (cfg.concept_loss_weight, concept_bce.sum(1).mean())
        token_log_probs = token_mask = None
        if self.captioner is not None and self_critical:
            self._sample_with_baseline(z, out)
        elif self.captioner is not None and input_ids is not None:
            caption_z = concept_labels.to(z.dtype) if teacher_concepts else z
            out.caption_logits, out.cache = self.captioner(input_ids, self.captioner.initial_state(caption_z))
            token_log_probs, token_mask = self._token_log_probs(out.caption_logits, input_ids, attention_mask)
            # Always present (0 for a batch without captions) so every captioner weight is in every step's graph:
            # DDP then never sees unused parameters.
            losses["caption_loss"] = (cfg.caption_loss_weight,
                                      -(token_log_probs * token_mask).sum() / token_mask.sum().clamp_min(1))
        if (cfg.uses_cam_loss and labels is not None and input_ids is not None and pooled is not None
                and not teacher_concepts):
            losses["cam_loss"] = (cfg.cam_loss_weight,
                                  self._cam_loss(feature_maps, pooled, z, out.logits, labels, input_ids,
                                                 token_log_probs, token_mask))
        for name, (_, value) in losses.items():
            setattr(out, name, value)
        if losses:
            out.loss = sum(weight * value for weight, value in losses.values())
        return out

    def _sample_with_baseline(self, z: Tensor, out: CamJointOutput) -> None:
        """Self-critical training's two decodes: a sampled caption with its graph, and the greedy baseline decoded
        as at inference (eval mode, no graph)."""
        cfg = self.config
        args = (cfg.max_caption_length, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id)
        out.sampled_ids, out.sampled_log_probs, out.sampled_mask = self.captioner.decode(z, *args, sample=True)
        was_training = self.captioner.training
        self.captioner.eval()
        with torch.no_grad():
            out.greedy_ids = self.captioner.decode(z.detach(), *args)[0]
        self.captioner.train(was_training)

    def _caption_step(self, input_ids, pixel_values, feature_maps, image_embeds, cache):
        if cache is None:
            if image_embeds is None:
                image_embeds = self.get_image_embeds(pixel_values, feature_maps)
            cache = self.captioner.initial_state(image_embeds)
            # Batched prompts are left-padded: padding must not move the LSTM before the prompt's bos.
            # Only LEFT padding: a pad after the first real token was generated (use_cache=False re-runs the whole
            # sequence) and must be fed exactly as the cached path fed it.
            real = (input_ids != self.config.pad_token_id).cumsum(1) > 0
            mask = None if bool(real.all()) else real
        else:
            mask = None
        logits, cache = self.captioner(input_ids, cache, mask=mask)
        out = CamJointCaptionStepOutput(logits=logits, cache=cache)
        if GENERATION_CACHE_KEY != "cache":
            out[GENERATION_CACHE_KEY] = cache  # Transformers < 5.24 reads it under this name (not a field there)
        return out

    def _token_log_probs(self, caption_logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None):
        """log P(w_t | w_<t, image) of each caption token after bos, and the mask of real (non-pad) tokens."""
        targets = input_ids[:, 1:]
        mask = (targets != self.config.pad_token_id) if attention_mask is None else attention_mask[:, 1:].bool()
        log_probs = -F.cross_entropy(at_least_float32(caption_logits[:, :-1]).transpose(1, 2), targets, reduction="none")
        return log_probs, mask.to(log_probs.dtype)

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
        if self.classifier is None:
            return
        if labels.ndim != 1:
            raise ValueError(f"labels must be class ids of shape (batch,), got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_labels):
            bad = labels[(labels < 0) | (labels >= self.config.num_labels)][0].item()
            raise ValueError(f"class id {bad} is unknown: the model has {self.config.num_labels} classes "
                             f"(0..{self.config.num_labels - 1})")

    # ------------------------------------------------------------------ Grad-CAM
    def _class_sensitivity(self, classes: Tensor, trainable: bool) -> Tensor:
        """dy/dz of the class logit y = W[c] z + b: the weight row, whatever z is (the classifier is linear)."""
        weight = self.classifier.weight if trainable else self.classifier.weight.detach()
        return weight[classes]

    def _caption_sensitivity(self, caption_ids: Tensor, z: Tensor, create_graph: bool,
                             detach_captioner: bool) -> Tensor:
        """dy/dz of y = log P(caption | z) for each row, through the LSTM (a backward pass of the captioner).

        `detach_captioner` runs the captioner on detached copies of its parameters, so that a loss built on this
        sensitivity (with `create_graph`) trains f_medi through z but never the captioner (Algorithm 1 line 16).
        """
        if not z.requires_grad:
            z = z.detach().requires_grad_()
        if detach_captioner:
            detached = {name: p.detach() for name, p in self.captioner.named_parameters()}
            logits = torch.func.functional_call(self.captioner, detached, (caption_ids,), {"image_embeds": z})[0]
        else:
            logits = self.captioner(caption_ids, image_embeds=z)[0]
        log_probs, mask = self._token_log_probs(logits, caption_ids, None)
        score = CaptionTarget(self.config.cam_caption_target)(log_probs, mask)
        (sensitivity,) = torch.autograd.grad(score.sum(), z, create_graph=create_graph)
        return sensitivity

    @torch.no_grad()
    def greedy_captions(self, image_embeds: Tensor, max_length: int | None = None) -> Tensor:
        """Greedy decoding (bos, w1, ..., eos, pad...), batched, without the generation loop's bookkeeping."""
        cfg = self.config
        return self.captioner.decode(image_embeds, max_length or cfg.max_caption_length, cfg.bos_token_id,
                                     cfg.eos_token_id, cfg.pad_token_id)[0]

    def _predicted_caption_sensitivity(self, z: Tensor, create_graph: bool, detach_captioner: bool,
                                       max_length: int):
        """The greedy caption and dy/dz of its score, both from ONE decoding pass (decoded with the graph).

        `max_length` caps the decode at the answer captions' length: an early, untrained captioner rarely emits eos,
        and a prediction longer than every answer adds cost, not evidence."""
        cfg = self.config
        if not z.requires_grad:
            z = z.detach().requires_grad_()
        decode_args = (z, max_length, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id)
        if detach_captioner:
            detached = {f"captioner.{name}": p.detach() for name, p in self.captioner.named_parameters()}
            tokens, log_probs, mask = torch.func.functional_call(_GreedyScorer(self.captioner), detached,
                                                                 decode_args)
        else:
            tokens, log_probs, mask = self.captioner.decode(*decode_args)
        score = CaptionTarget(cfg.cam_caption_target)(log_probs, mask)
        (sensitivity,) = torch.autograd.grad(score.sum(), z, create_graph=create_graph)
        return tokens, sensitivity

    def _cam_loss(self, feature_maps, pooled, z, class_logits, labels, input_ids, token_log_probs, token_mask):
        """Eq. 6 with Algorithm 1's routing. See `cam_gradient_mode` and `cam_trains` in the config."""
        maps = self.disagreement_maps(feature_maps, pooled, z, class_logits, labels, input_ids, token_log_probs,
                                      token_mask)
        answer_class, predicted_class, answer_caption, predicted_caption = maps
        return disagreement_loss(answer_caption, predicted_class, answer_class, predicted_caption)

    def disagreement_maps(self, feature_maps, pooled, z, class_logits, labels, input_ids, token_log_probs=None,
                          token_mask=None, gradient_mode: str | None = None, predicted_labels: Tensor | None = None,
                          predicted_caption_ids: Tensor | None = None) -> Tensor:
        """The four maps of eq. 6, stacked (4, B, h, w): classifier answer / predicted class, captioner answer /
        predicted (greedy) caption. Differentiable with the routing of `config.cam_trains`.

        `predicted_labels` / `predicted_caption_ids` hold the "p" targets fixed instead of re-choosing them from the
        current model (argmax class, greedy caption): with both fixed, L_cam is a smooth function of f_medi."""
        cfg = self.config
        trains_all = cfg.cam_trains == "all"
        exact = (gradient_mode or cfg.cam_gradient_mode) == "exact"
        with torch.enable_grad():
            # What the maps are computed from: A and p detached unless L_cam may train the encoder.
            maps_source = feature_maps if trains_all else feature_maps.detach()
            pooled_cam = pooled if (trains_all and pooled.requires_grad) else pooled.detach().requires_grad_()
            predicted_class = (class_logits.argmax(-1) if predicted_labels is None else predicted_labels).detach()
            class_sens = torch.stack([self._class_sensitivity(labels, trains_all),
                                      self._class_sensitivity(predicted_class, trains_all)])
            if exact:
                # Second order: s = dy/dz is a function of z = f_medi(p), so L_cam also reaches f_medi through s.
                z_cam = self.image_vector(pooled_cam)
                answer_sens = self._caption_sensitivity(input_ids, z_cam, True, not trains_all)
                if predicted_caption_ids is None:
                    _, predicted_sens = self._predicted_caption_sensitivity(z_cam, True, not trains_all,
                                                                            input_ids.shape[1])
                else:
                    predicted_sens = self._caption_sensitivity(predicted_caption_ids, z_cam, True, not trains_all)
            else:
                # First order: s is a constant. The answer caption's teacher-forced pass is the caption loss's own.
                if token_log_probs is None or not z.requires_grad:
                    answer_sens = self._caption_sensitivity(input_ids, z.detach(), False, False)
                else:
                    answer_score = CaptionTarget(cfg.cam_caption_target)(token_log_probs, token_mask)
                    (answer_sens,) = torch.autograd.grad(answer_score.sum(), z, retain_graph=True)
                if predicted_caption_ids is None:
                    _, predicted_sens = self._predicted_caption_sensitivity(z.detach(), False, False,
                                                                            input_ids.shape[1])
                else:
                    predicted_sens = self._caption_sensitivity(predicted_caption_ids, z.detach(), False, False)
            sensitivity = torch.cat([class_sens, answer_sens[None], predicted_sens[None]]).to(pooled_cam.dtype)
            grads = pooled_gradient(pooled_cam, self.image_vector, sensitivity, create_graph=True)
            return cam_from_pooled_gradient(maps_source, grads, relu=cfg.cam_relu)

    def grad_cam(self, pixel_values: Tensor | None = None, labels: Tensor | None = None,
                 caption_ids: Tensor | None = None, create_graph: bool = False,
                 feature_maps: Tensor | None = None, per_word: bool = False) -> Tensor:
        """Grad-CAM maps over the encoder's last feature map, one target per image.

        Args:
            pixel_values / feature_maps: the images, or their cached feature maps.
            labels: class ids (B,): maps for those classes' logits (the classifier's evidence).
            caption_ids: captions (B, T) starting with bos: maps for log P(caption | image) (the captioner's
                evidence). Exactly one of `labels` / `caption_ids`.
            create_graph: keep the graph so the maps can be differentiated (as the CAM loss does).
            per_word: with `caption_ids`, one map per caption word (the log-probability of that word): (B, T-1, h, w).

        Returns:
            (B, h, w) maps (or (B, T-1, h, w) with `per_word`), float32, ReLU applied if `config.cam_relu`.
        """
        if (labels is None) == (caption_ids is None):
            raise ValueError("grad_cam needs exactly one target: labels (class ids) or caption_ids (captions)")
        with torch.enable_grad():
            maps = self._feature_maps(pixel_values, feature_maps)
            if not create_graph:
                maps = maps.detach()
            pooled = maps.mean((2, 3))
            if not pooled.requires_grad:
                pooled = pooled.detach().requires_grad_()
            if labels is not None:
                if self.classifier is None:
                    raise ValueError(f"variant {self.config.variant!r} has no classifier: use caption_ids")
                self._check_labels(labels)
                sensitivity = self._class_sensitivity(labels, create_graph)[None]
            else:
                if self.captioner is None:
                    raise ValueError(f"variant {self.config.variant!r} has no captioner: use labels")
                self._check_caption_ids(caption_ids)
                z = self.image_vector(pooled)
                if per_word:
                    sensitivity = self._word_sensitivities(caption_ids, z, create_graph)
                else:
                    sensitivity = self._caption_sensitivity(caption_ids, z, create_graph, False)[None]
            grads = pooled_gradient(pooled, self.image_vector, sensitivity.to(pooled.dtype), create_graph)
            cams = cam_from_pooled_gradient(maps, grads, relu=self.config.cam_relu)
        return cams.transpose(0, 1) if per_word else cams[0]

    def _word_sensitivities(self, caption_ids: Tensor, z: Tensor, create_graph: bool) -> Tensor:
        logits = self.captioner(caption_ids, image_embeds=z)[0]
        log_probs, _ = self._token_log_probs(logits, caption_ids, None)
        rows = []
        for step in range(log_probs.shape[1]):
            (grad,) = torch.autograd.grad(log_probs[:, step].sum(), z, retain_graph=True, create_graph=create_graph)
            rows.append(grad)
        return torch.stack(rows)

    # ------------------------------------------------------------------ generation
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the LSTM state is not a key/value cache

    def _reorder_cache(self, cache: LSTMCaptionCache, beam_idx: Tensor) -> LSTMCaptionCache:
        cache.reorder_cache(beam_idx)
        return cache

    def prepare_inputs_for_generation(self, input_ids: Tensor, cache: LSTMCaptionCache | None = None,
                                      image_embeds: Tensor | None = None, pixel_values: Tensor | None = None,
                                      feature_maps: Tensor | None = None, use_cache: bool | None = None,
                                      cache_params: LSTMCaptionCache | None = None, **kwargs):
        cache = cache if cache is not None else cache_params  # `cache_params`: Transformers < 5.24
        if cache is not None and use_cache is not False:
            return {"input_ids": input_ids[:, -1:], "cache": cache, "caption_step": True}
        return {"input_ids": input_ids, "image_embeds": image_embeds, "pixel_values": pixel_values,
                "feature_maps": feature_maps, "caption_step": True}

    @torch.no_grad()
    def generate(self, pixel_values: Tensor | None = None, feature_maps: Tensor | None = None,
                 image_embeds: Tensor | None = None, **kwargs):
        """Caption images with Transformers' generation loop (all its strategies and options).

        The image is encoded once, before beam expansion, and z travels in the LSTM cache: beams and samples never
        re-run the encoder.
        """
        if self.captioner is None:
            raise ValueError(f"variant {self.config.variant!r} has no captioner; it cannot generate captions")
        if image_embeds is None:
            image_embeds = self.get_image_embeds(pixel_values, feature_maps)
        kwargs.pop("attention_mask", None)  # prompts are bos only; a processor's text mask is not an LSTM input
        return super().generate(image_embeds=image_embeds, **kwargs)


class CamJointForImageClassification(CamJointModel):
    """The same model and weights seen as an image classifier (`pipeline("image-classification")`)."""

    main_input_name = "pixel_values"

    def forward(self, pixel_values: Tensor | None = None, labels: Tensor | None = None,
                feature_maps: Tensor | None = None, return_dict: bool | None = None,
                output_attentions: bool | None = None,
                output_hidden_states: bool | None = None) -> ImageClassifierOutput:
        out = super().forward(pixel_values=pixel_values, labels=labels, feature_maps=feature_maps)
        return ImageClassifierOutput(loss=out.class_loss, logits=out.logits)


# Saving writes `auto_map` and copies this file and its siblings, so a checkpoint loads with trust_remote_code.
CamJointModel.register_for_auto_class("AutoModel")
CamJointForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["CamJointModel", "CamJointForImageClassification", "CamJointPreTrainedModel", "CamJointOutput",
           "LSTMCaptionCache"]
