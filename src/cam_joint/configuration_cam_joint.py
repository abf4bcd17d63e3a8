"""Configuration of CamJoint: joint fine-grained classification and captioning (Yoon et al., ETRI Journal 2020).

This file ships next to every checkpoint as remote code: it imports only `transformers` and its sibling `cam_core`.
"""

from __future__ import annotations

from typing import NamedTuple

from transformers import PretrainedConfig

from .cam_core import CAM_METHODS, MAP_SIMILARITIES


class VariantSpec(NamedTuple):
    """What a `variant` builds and trains: the one place the variants are described (config, CLI, model card)."""

    title: str
    parts: str
    loss: str
    has_intermediate: bool
    has_classifier: bool
    has_captioner: bool


# The paper's four models (section 4.3) and the semantically regularised design of Liu et al. (CVPR 2017). A new
# variant is one entry here (and, if it trains differently, one term in the training loop's objectives).
VARIANTS: dict[str, VariantSpec] = {
    "cnn": VariantSpec("CNN classification baseline", "encoder + linear classifier", "L_class", False, True, False),
    "lrcn": VariantSpec("LRCN captioning baseline", "encoder + LSTM captioner", "L_caption", False, False, True),
    "intermediate": VariantSpec("joint model without the CAM loss",
                                "encoder + shared intermediate layer f_medi + classifier + LSTM captioner",
                                "L_class + L_caption", True, True, True),
    "cam": VariantSpec("proposed model (joint training with the CAM disagreement loss)",
                       "encoder + shared intermediate layer f_medi + classifier + LSTM captioner",
                       "L_class + L_caption + L_cam", True, True, True),
    "semantic": VariantSpec("semantically regularised captioner (Liu et al., CVPR 2017)",
                            "encoder + concept layer f_medi (sigmoid concept probabilities) + classifier + LSTM "
                            "captioner", "L_concept + L_caption (+ L_class)", True, True, True),
}
CONDITIONINGS = ("every_step", "init_state", "first_step")
CAM_GRADIENT_MODES = ("exact", "first_order")
CAM_TRAINS = ("intermediate", "all")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "identity")  # identity = Transformers' ACT2FN "linear"


class CamJointConfig(PretrainedConfig):
    r"""
    Configuration of [`CamJointModel`]. The four model variants of the paper (section 4.3) and the semantically
    regularised design of Liu et al. (CVPR 2017) are values of `variant`:

    | variant        | parts                                                        | training loss                   |
    | -------------- | ------------------------------------------------------------ | ------------------------------- |
    | `cnn`          | encoder + classifier                                         | L_class                         |
    | `lrcn`         | encoder + LSTM captioner                                     | L_caption                       |
    | `intermediate` | encoder + f_medi + classifier + captioner                    | L_class + L_caption             |
    | `cam`          | same as `intermediate`                                       | L_class + L_caption + L_cam     |
    | `semantic`     | f_medi predicts concept probabilities (sigmoid, BCE)          | L_concept + L_caption (+ class) |

    Args:
        encoder_name (`str`, defaults to `"resnet18"`):
            Any timm CNN whose `forward_features` returns a `(batch, channels, height, width)` map (the paper uses
            `inception_v4`). The encoder is always created with random weights here: ImageNet weights are loaded only
            by [`CamJointModel.load_pretrained_encoder`], which training calls when asked (`--encoder-pretrained`).
        encoder_kwargs (`dict`, *optional*):
            Extra keyword arguments of `timm.create_model` for the encoder, e.g. `{"output_stride": 16}` for a finer
            feature map (and so finer CAMs) from the same weights. Saved with the config, so a checkpoint rebuilds
            exactly the encoder it was trained with.
        encoder_weights (`str`, *optional*):
            A local timm checkpoint for the encoder's pretrained weights: a `.safetensors`, `.pth` or `.bin` file, or
            a folder with timm's `model.safetensors` (or `pytorch_model.bin`) and `config.json`, loaded by
            [`CamJointModel.load_pretrained_encoder`] through timm's own loader (`pretrained_cfg_overlay`) instead of
            downloading. Recorded for provenance: a saved checkpoint holds the encoder's weights itself.
        encoder_feature_stage (`int`, *optional*):
            Read A from this stage of the encoder (an index of timm's `feature_info`, e.g. 3 for a ResNet's layer3)
            instead of its last feature map; the later stages are pruned away (timm's `prune_intermediate_layers`).
            With `encoder_kwargs={"output_stride": 8}` this gives a resnet10t 12x12 maps at 96 px for about 1.2x the
            cost of its 3x3 ones (the full dilated network costs 2.4x).
        encoder_channels (`int`, *optional*):
            Channels of the encoder's last feature map. Filled in when the model is built; kept in the config so that
            a checkpoint states what its weights expect.
        freeze_encoder (`bool`, defaults to `True`):
            Keep the encoder fixed (Algorithm 1 lines 15-17 do not update it). `False` fine-tunes it jointly with the
            heads, as in the ImageCLEF 2016 joint CNN+LSTM training.
        variant (`str`, defaults to `"cam"`): one of `cnn`, `lrcn`, `intermediate`, `cam`, `semantic` (table above).
        intermediate_size (`int`, defaults to 1024): width D of the intermediate layer f_medi (1024 in the paper).
        intermediate_activation (`str`, defaults to `"relu"`): non-linearity of f_medi (`semantic` forces sigmoid).
        num_concepts (`int`, defaults to 1000):
            For `variant="semantic"`: K, the number of concept words (the K most frequent caption words) predicted by
            the intermediate layer. `intermediate_size` is set to it.
        captioner_type (`str`, defaults to `"lstm"`): the captioner f_caption (the modeling file's `CAPTIONERS`).
        word_embedding_size (`int`, defaults to 512): size of the caption word embeddings.
        hidden_size (`int`, defaults to 1024): LSTM hidden units (1024 in the paper).
        num_lstm_layers (`int`, defaults to 1): stacked LSTM layers.
        conditioning (`str`, defaults to `"every_step"`):
            How the image vector z conditions the LSTM: `every_step` (LRCN: z is concatenated to every word
            embedding), `init_state` (z sets the initial hidden and cell states through a linear layer; the semantic
            regularisation paper) or `first_step` (Show-and-Tell / NIC: z, projected to the word-embedding size, is the
            LSTM's input at step 0 and the words follow).
        dropout (`float`, defaults to 0.0): dropout on word embeddings and LSTM outputs during training.
        vocab_size (`int`, defaults to 16): size of the caption vocabulary (set from the tokenizer).
        max_caption_length (`int`, defaults to 32): longest caption, in tokens including bos and eos.
        class_loss_weight, caption_loss_weight (`float`, default 1.0): weights of L_class and L_caption.
        concept_loss_weight (`float`, defaults to 1.0):
            Weight of the concept loss (`semantic`): binary cross-entropy summed over the K concepts (eq. 5 of Liu et
            al.), averaged over images. The paper also SUMS the caption loss over tokens, where L_caption here is a
            mean over them: a weight of 1 / (mean caption length) gives the paper's balance exactly.
        use_cam_loss (`bool`, *optional*):
            Train with the CAM disagreement loss. Defaults to `True` for `variant="cam"`, `False` otherwise; `True`
            with `variant="semantic"` adds it to the semantically regularised model (the concept layer is f_medi).
        cam_loss_weight (`float`, defaults to 1.0): weight of the CAM disagreement loss L_cam (eq. 6).
        cam_method (`str`, defaults to `"gradcam"`):
            How a map is made from the feature map and a target's gradient, in the loss and in every picture:
            `gradcam` (eq. 4-5 of the paper), `hirescam` or `gradcam++` (`cam_core.CAM_METHODS`).
        cam_relu (`bool`, defaults to `True`):
            Apply ReLU to the CAM as Grad-CAM does; `False` keeps the plain weighted sum of eq. 5.
        cam_gradient_mode (`str`, defaults to `"first_order"`):
            `exact` differentiates L_cam through the full second-order graph (the head's sensitivity dy/dz depends on
            z); `first_order` treats the head's sensitivity dy/dz as a constant, so L_cam reaches f_medi through its
            own Jacobian only. Both are equal on the (linear) classifier path; `first_order` drops the LSTM's
            second-order term and is much cheaper.
        cam_trains (`str`, defaults to `"intermediate"`):
            What L_cam trains: `intermediate` = f_medi only (Algorithm 1 lines 15-17); `all` = every trainable
            parameter the maps depend on (heads, captioner, and the encoder when it is not frozen).
        cam_caption_target (`str`, defaults to `"sum"`):
            Score y of a caption target: `sum` of the token log-probabilities (the log-probability of the whole
            caption given the image), `mean` (length-normalised), or `discriminative`: sum_t w[c, w_t] log P(w_t),
            each word weighted by how much it tells class c (positive PMI of word and class in the TRAINING
            captions, divided by the class's largest; special tokens 0: `discriminative_words`). The weights are
            fixed at the start of training and saved in the checkpoint (buffer `caption_word_weights`). c is the
            answer class for the answer caption, the predicted class for the greedy caption and for a map without a
            label (`grad_cam`, `explain`, the demo).
        cam_predicted_targets (`str`, defaults to `"predicted"`):
            The "p" targets of eq. 6. `predicted`: the classifier's argmax class and the captioner's greedy caption,
            re-chosen from the current model at every step (the paper). `answer`: the answer class and caption stand
            in for them, so both terms compare the two heads' maps of the ground truth; no argmax or decoding, so
            L_cam is a smooth function of f_medi (the paper's choice makes it piecewise: a step that flips a
            prediction changes the objective itself).
        cam_similarity (`str`, defaults to `"cosine"`):
            How eq. 6 compares two maps: `cosine` (the paper, eq. 7) or `pearson` (the cosine of the maps less their
            means). A flat map has a high cosine with any map, so the cosine rewards both heads for spreading their
            maps out; the correlation does not (see the README's CAM study).
        cam_guide (`str`, defaults to `"mutual"`):
            What L_cam pulls the maps toward. `mutual`: eq. 6, the two heads' maps toward each other (the paper).
            `captioner`: the captioner's answer-caption map is a one-way teacher, detached, so L_cam trains only the
            classifier's side and agreeing cannot pull the captioner onto the classifier's shortcut. `mask`: the
            oracle, the ground-truth deciding-parts mask (`part_mask` restricted to `discriminative_parts`, area-
            averaged to the map's size): how much attention supervision can gain at all. Routing: `cam_trains`.
        cam_guidance_loss (`str`, defaults to `"cosine"`):
            The loss of a one-way guide (`cam_guide` captioner / mask). `cosine`: eq. 6's form, 1 - `cam_similarity`
            of the ANSWER class's map and the guide. `evidence`: for EVERY class, the share of its signed evidence
            (Grad-CAM without ReLU, whose spatial sum is the logit's first-order contribution) outside the guide
            region, averaged over classes (`losses_cam_joint.evidence_outside_share`): a map that looks right can
            still leave the decision to evidence elsewhere (negative evidence, other classes' maps).
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of the heads.
        bos_token_id, eos_token_id, pad_token_id, unk_token_id (`int`): special token ids of the caption vocabulary.
    """

    model_type = "cam_joint"

    def __init__(
        self,
        encoder_name: str = "resnet18",
        encoder_channels: int | None = None,
        encoder_kwargs: dict | None = None,
        encoder_weights: str | None = None,
        encoder_feature_stage: int | None = None,
        freeze_encoder: bool = True,
        variant: str = "cam",
        intermediate_size: int = 1024,
        intermediate_activation: str = "relu",
        num_concepts: int = 1000,
        captioner_type: str = "lstm",
        word_embedding_size: int = 512,
        hidden_size: int = 1024,
        num_lstm_layers: int = 1,
        conditioning: str = "every_step",
        dropout: float = 0.0,
        vocab_size: int = 16,
        max_caption_length: int = 32,
        class_loss_weight: float = 1.0,
        caption_loss_weight: float = 1.0,
        concept_loss_weight: float = 1.0,
        use_cam_loss: bool | None = None,
        cam_loss_weight: float = 1.0,
        cam_method: str = "gradcam",
        cam_relu: bool = True,
        cam_gradient_mode: str = "first_order",
        cam_trains: str = "intermediate",
        cam_caption_target: str = "sum",
        cam_predicted_targets: str = "predicted",
        cam_similarity: str = "cosine",
        cam_guide: str = "mutual",
        cam_guidance_loss: str = "cosine",
        initializer_range: float = 0.02,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int = 0,
        unk_token_id: int = 3,
        **kwargs,
    ):
        given = locals()
        for name, choices in _CHOICES.items():
            _check_choice(name, given[name], choices)
        if variant == "semantic":
            intermediate_size, intermediate_activation = num_concepts, "sigmoid"
        for name, value in (("intermediate_size", intermediate_size), ("hidden_size", hidden_size),
                            ("word_embedding_size", word_embedding_size), ("num_lstm_layers", num_lstm_layers),
                            ("max_caption_length", max_caption_length)):
            if int(value) < 1:
                raise ValueError(f"CamJointConfig.{name} must be a positive integer, got {value!r}")
        self.encoder_name = encoder_name
        self.encoder_channels = encoder_channels
        if encoder_kwargs is not None and not isinstance(encoder_kwargs, dict):
            raise ValueError(f"CamJointConfig.encoder_kwargs must be a dict of timm.create_model arguments, got "
                             f"{encoder_kwargs!r}")
        self.encoder_kwargs = dict(encoder_kwargs) if encoder_kwargs else None
        self.encoder_weights = None if encoder_weights is None else str(encoder_weights)
        self.encoder_feature_stage = None if encoder_feature_stage is None else int(encoder_feature_stage)
        self.freeze_encoder = freeze_encoder
        self.variant = variant
        self.intermediate_size = intermediate_size
        self.intermediate_activation = intermediate_activation
        self.num_concepts = num_concepts
        self.captioner_type = captioner_type
        self.word_embedding_size = word_embedding_size
        self.hidden_size = hidden_size
        self.num_lstm_layers = num_lstm_layers
        self.conditioning = conditioning
        self.dropout = dropout
        self.vocab_size = vocab_size
        self.max_caption_length = max_caption_length
        self.class_loss_weight = class_loss_weight
        self.caption_loss_weight = caption_loss_weight
        self.concept_loss_weight = concept_loss_weight
        self.use_cam_loss = (variant == "cam") if use_cam_loss is None else bool(use_cam_loss)
        if self.use_cam_loss and variant not in ("cam", "semantic"):
            raise ValueError(f"CamJointConfig.use_cam_loss needs both heads and f_medi (variant cam or semantic), "
                             f"not variant={variant!r}")
        self.cam_loss_weight = cam_loss_weight
        self.cam_method = cam_method
        self.cam_relu = cam_relu
        self.cam_gradient_mode = cam_gradient_mode
        self.cam_trains = cam_trains
        self.cam_caption_target = cam_caption_target
        self.cam_predicted_targets = cam_predicted_targets
        self.cam_similarity = cam_similarity
        if cam_guide == "mutual" and cam_guidance_loss != "cosine":
            raise ValueError(f"CamJointConfig.cam_guidance_loss={cam_guidance_loss!r} is the loss of a one-way guide: "
                             f"set cam_guide to 'captioner' or 'mask' (eq. 6, cam_guide='mutual', is its own loss)")
        if cam_guide != "mutual" and not self.use_cam_loss:
            raise ValueError(f"CamJointConfig.cam_guide={cam_guide!r} guides the CAM loss, which this config does not "
                             f"train (variant={variant!r}, use_cam_loss={self.use_cam_loss})")
        if cam_caption_target == "discriminative" and not VARIANTS[variant].has_classifier:
            raise ValueError(f"CamJointConfig.cam_caption_target='discriminative' weighs a caption's words by the "
                             f"class it is scored for: variant={variant!r} has no classifier to say which")
        self.cam_guide = cam_guide
        self.cam_guidance_loss = cam_guidance_loss
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    # What each variant builds. Properties, not stored fields, so they can never disagree with `variant`.
    @property
    def has_classifier(self) -> bool:
        return VARIANTS[self.variant].has_classifier

    @property
    def has_captioner(self) -> bool:
        return VARIANTS[self.variant].has_captioner

    @property
    def has_intermediate(self) -> bool:
        return VARIANTS[self.variant].has_intermediate

    @property
    def uses_cam_loss(self) -> bool:
        return bool(self.use_cam_loss)


# The fields that take one of a fixed set of values.
_CHOICES: dict[str, tuple[str, ...]] = {
    "variant": tuple(VARIANTS), "conditioning": CONDITIONINGS, "cam_method": tuple(CAM_METHODS),
    "cam_gradient_mode": CAM_GRADIENT_MODES, "cam_trains": CAM_TRAINS, "intermediate_activation": ACTIVATIONS,
    "cam_caption_target": ("sum", "mean", "discriminative"), "cam_predicted_targets": ("predicted", "answer"),
    "cam_similarity": tuple(MAP_SIMILARITIES), "cam_guide": ("mutual", "captioner", "mask"),
    "cam_guidance_loss": ("cosine", "evidence"),
}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"CamJointConfig.{name}={value!r} is not one of {', '.join(choices)}")


__all__ = ["CamJointConfig", "VARIANTS", "VariantSpec"]

CamJointConfig.register_for_auto_class()
