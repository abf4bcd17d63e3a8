"""The model `cam-joint train` starts from: a fresh `CamJointModel` built from the command line (a hub config, the
options that set config fields, the synthetic data's small default encoder, a tokenizer from the training captions),
or a saved checkpoint fine-tuned on other data with its weights transferred word by word and class by class; and
what the CAM loss reads from the training data before the first step."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from .data.guide_masks import check_guide_mask_columns
from .training_data import SYNTHETIC_DEFAULTS

logger = logging.getLogger("cam_joint.train")


SYNTHETIC_ENCODER = {"encoder_name": "resnet10t", "encoder_kwargs": {"output_stride": 8}, "encoder_feature_stage": 3}


CONFIG_OPTIONS = {"variant": "variant", "conditioning": "conditioning", "cam_gradient_mode": "cam_gradient_mode",
                   "freeze_encoder": "freeze_encoder", "intermediate_size": "intermediate_size",
                   "hidden_size": "hidden_size", "word_embedding_size": "word_embedding_size",
                   "encoder": "encoder_name", "num_concepts": "num_concepts", "cam_loss_weight": "cam_loss_weight",
                   "cam_method": "cam_method", "cam_predicted_targets": "cam_predicted_targets",
                   "cam_caption_target": "cam_caption_target", "cam_similarity": "cam_similarity",
                   "cam_guide": "cam_guide", "cam_guidance_loss": "cam_guidance_loss", "cam_trains": "cam_trains",
                   "encoder_kwargs": "encoder_kwargs",
                   "encoder_feature_stage": "encoder_feature_stage", "encoder_weights": "encoder_weights"}
# Config fields that the data decides (vocabulary, classes) or that only describe the file.


DERIVED_FIELDS = ("vocab_size", "id2label", "label2id", "auto_map", "architectures", "transformers_version",
                   "model_type", "_name_or_path", "dtype", "torch_dtype", "encoder_channels")


def check_encoder_is_meaningful(args, config) -> None:
    """A frozen encoder that was never given pretrained weights computes features of random filters: the heads train
    on noise and nothing says so. Refuse it unless asked for."""
    if (config.freeze_encoder and not (args.encoder_pretrained or args.encoder_weights or args.init_from)
            and not args.allow_random_frozen_encoder):
        raise ValueError(f"the encoder {config.encoder_name!r} is frozen but has no pretrained weights: its features "
                         f"would be those of random filters. Pass --encoder-weights PATH (a local timm checkpoint), "
                         f"--encoder-pretrained (timm's ImageNet weights, downloaded), or --train-encoder; "
                         f"--allow-random-frozen-encoder if this is really meant (tests)")


# Options whose value the model's config decides when the command line leaves them unset: recorded resolved.


def build_model_and_processor(args, train_split, label_names):
    from . import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer

    captions = [c for row in train_split["captions"] for c in row]
    if args.init_from:
        return init_from_checkpoint(args, captions, label_names)
    if getattr(args, "model_settings", None):  # --args-from: the recorded run's own settings
        settings = dict(args.model_settings)
    else:
        settings = json.loads(Path(args.config).read_text()) if args.config else {}
    for key in DERIVED_FIELDS:
        settings.pop(key, None)
    # Every option that sets a config field, except the encoder weights: load_pretrained_encoder records those once
    # they have loaded into the encoder.
    overrides = {field: getattr(args, option) for option, field in CONFIG_OPTIONS.items()
                 if option != "encoder_weights"}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if args.dataset == "synthetic":
        # Small and fast by default: a frozen RANDOM encoder cannot learn the synthetic birds (no ImageNet weights
        # here), so the default fine-tunes a small one. Its maps are read at stride 8 from layer3 (layer4 pruned):
        # 12x12 at 96 px, fine enough to say which part a map points at, for ~1.2x the cost of the 3x3 ones.
        if "encoder_name" not in settings:
            for key, value in SYNTHETIC_ENCODER.items():
                settings.setdefault(key, value)
        for key, value in {"freeze_encoder": False, "intermediate_size": 256, "hidden_size": 256,
                           "word_embedding_size": 128}.items():
            settings.setdefault(key, value)
    tokenizer = build_caption_tokenizer(captions) if captions else build_caption_tokenizer(["empty"])
    words = len(tokenizer) - len(tokenizer.all_special_ids)
    if settings.get("variant") == "semantic" and settings.get("num_concepts", 1000) > words:
        # A concept beyond the vocabulary would never be active: K is at most the number of caption words.
        logger.info("num_concepts %s > the %d words of the caption vocabulary: using %d",
                    settings.get("num_concepts", 1000), words, words)
        settings["num_concepts"] = words
    settings.update(vocab_size=len(tokenizer), max_caption_length=args.max_caption_length,
                    id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    settings.pop("num_labels", None)
    model = CamJointModel(CamJointConfig(**settings))
    data_config = model.encoder_data_config()
    if args.image_size or args.dataset == "synthetic":
        size = args.image_size or SYNTHETIC_DEFAULTS["image_size"]
        data_config = {**data_config, "input_size": (3, size, size), "crop_pct": 1.0}
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(data_config), tokenizer)
    return model, processor


def init_from_checkpoint(args, captions, label_names):
    """Fine-tune a saved model on another dataset (Show-and-Tell / ImageCLEF): keep every weight whose meaning
    survives, re-initialise the class head if the label set changed, and map the vocabulary word by word."""
    from . import CamJointModel, CamJointProcessor, build_caption_tokenizer

    source = CamJointModel.from_pretrained(args.init_from)
    source_processor = CamJointProcessor.from_pretrained(args.init_from)
    tokenizer = build_caption_tokenizer(captions)
    source_labels = [source.config.id2label[i] for i in range(source.config.num_labels)]
    config = copy.deepcopy(source.config)
    config.update({"vocab_size": len(tokenizer), "id2label": dict(enumerate(label_names)),
                   "label2id": {n: i for i, n in enumerate(label_names)}})
    config.max_caption_length = max(config.max_caption_length, args.max_caption_length)
    model = CamJointModel(config)
    report = transfer_weights(source, model, source_processor.tokenizer.get_vocab(), tokenizer.get_vocab(),
                              source_labels=source_labels, target_labels=label_names)
    for line in report:
        logger.info("init-from: %s", line)
    return model, CamJointProcessor(source_processor.image_processor, tokenizer)


def transfer_weights(source, target, source_vocab, target_vocab, source_labels, target_labels) -> list[str]:
    """Copy weights from `source` into `target`; rows of word and class matrices are matched by name. Returns the
    report: what was kept, what is new (initialised fresh) and what the checkpoint had that the new data lacks."""
    source_state, report = source.state_dict(), []
    word_rows = [(target_vocab[w], source_vocab[w]) for w in target_vocab if w in source_vocab]
    class_rows = [(i, source_labels.index(n)) for i, n in enumerate(target_labels) if n in source_labels]
    vocab_keys = {"captioner.embed_tokens.weight", "captioner.lm_head.weight", "captioner.lm_head.bias"}
    class_keys = {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if name not in source_state:
                report.append(f"{name}: not in the checkpoint, initialised fresh")
            elif name in vocab_keys or name in class_keys:
                rows = word_rows if name in vocab_keys else class_rows
                for new, old in rows:
                    tensor[new] = source_state[name][old]
                kind = "words" if name in vocab_keys else "classes"
                report.append(f"{name}: kept {len(rows)} of {tensor.shape[0]} {kind}, the rest initialised fresh")
            elif source_state[name].shape == tensor.shape:
                tensor.copy_(source_state[name])
            else:
                report.append(f"{name}: shape {tuple(source_state[name].shape)} -> {tuple(tensor.shape)}, "
                              f"initialised fresh")
    for kind, new_names, old_names in (("words", list(target_vocab), list(source_vocab)),
                                       ("classes", list(target_labels), list(source_labels))):
        old_set, new_set = set(old_names), set(new_names)
        added = [n for n in new_names if n not in old_set]
        dropped = [n for n in old_names if n not in new_set]
        report.append(f"{kind}: {len(new_names) - len(added)} kept, {len(added)} added{_examples(added)}, "
                      f"{len(dropped)} of the checkpoint's dropped{_examples(dropped)}")
    return report


def _examples(names: list[str], count: int = 5) -> str:
    if not names:
        return ""
    return " (" + ", ".join(map(str, names[:count])) + (", ..." if len(names) > count else "") + ")"


def prepare_cam_targets(model, processor, train_split, dataset_name: str) -> None:
    """What the CAM loss reads from the training data, fixed at the start: the discriminative caption score's word
    weights (from the training captions and labels), and for the mask oracle a check that the data has masks."""
    config = model.config
    if config.cam_caption_target == "discriminative":
        from .discriminative_words import caption_word_weights

        model.set_caption_word_weights(caption_word_weights(processor.tokenizer, train_split["captions"],
                                                            train_split["label"], config.num_labels))
    if config.uses_cam_loss and config.cam_guide == "mask":
        check_guide_mask_columns(train_split, dataset_name)
