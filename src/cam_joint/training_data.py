"""The training data of `cam-joint train`: which dataset a run trains on (the synthetic birds' recorded spec), the
items and batches its loop reads (an image or cached feature map, the label, one caption per epoch, the mask
oracle's guide), and the loader that shuffles them the same way with any number of workers."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .collator import caption_batch, pick_caption
from .data.guide_masks import GUIDE_MASK_COLUMNS, deciding_parts_mask


SYNTHETIC_DEFAULTS = {"num_classes": 20, "train_per_class": 200, "validation_per_class": 25, "test_per_class": 25,
                      "image_size": 96}


def has_accelerator() -> bool:
    """A GPU (or other torch accelerator) is present."""
    api = getattr(torch, "accelerator", None)  # torch >= 2.6
    return api.is_available() if api is not None else torch.cuda.is_available()


def load_training_data(args):
    """The DatasetDict and a JSON-able description that `cam-joint evaluate` can rebuild it from."""
    from .data import load_dataset_by_name

    if args.dataset == "synthetic":
        spec = {**SYNTHETIC_DEFAULTS, "seed": args.seed}
        for key, value in (("image_size", args.image_size), ("num_classes", args.synthetic_classes),
                           ("train_per_class", args.synthetic_per_class),
                           ("distractors", args.synthetic_distractors)):
            if value:  # only what was asked for: earlier runs' recorded specs stay the same
                spec[key] = value
        if args.synthetic_background_bias is not None:  # 0 is a bias too (every background another class's)
            spec["background_bias"] = args.synthetic_background_bias
            if args.synthetic_shifted_per_class is not None:
                spec["shifted_per_class"] = args.synthetic_shifted_per_class
        elif args.synthetic_shifted_per_class is not None:
            raise ValueError("--synthetic-shifted-per-class sizes the test_shifted split, which exists only with "
                             "--synthetic-background-bias")
        return load_dataset_by_name("synthetic", data_dir=args.data_dir, protocol=args.protocol, **spec), \
            {"synthetic": spec}
    options = {"skip_bad": True} if args.skip_bad else {}
    return load_dataset_by_name(args.dataset, data_dir=args.data_dir, protocol=args.protocol, **options), {}


class CaptionedImages(Dataset):
    """(image or cached feature map, label, one of its captions) per item. The caption changes every epoch,
    chosen by (seed, epoch, index) so that a resumed run sees exactly the same batches. With `guide_masks`, each item
    also carries its deciding parts' mask (the mask oracle), read from the split whether images or cached features
    feed the model."""

    def __init__(self, split, processor, max_caption_length: int, seed: int, features: torch.Tensor | None = None,
                 num_concepts: int = 0, guide_masks: bool = False):
        self.split, self.processor, self.features = split, processor, features
        self.num_concepts = num_concepts
        self.max_caption_length, self.seed, self.epoch = max_caption_length, seed, 0
        self.labels = split["label"]
        self.captions = split["captions"]
        # Only the mask columns: reading a row of them never decodes the image.
        self.mask_rows = None
        if guide_masks:
            self.mask_rows = split.select_columns(list(GUIDE_MASK_COLUMNS))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        captions = self.captions[index]
        caption = pick_caption(captions, random.Random(f"{self.seed}-{self.epoch}-{index}"))
        item = {"label": self.labels[index], "caption": caption, "index": index}
        if self.num_concepts:
            item["concepts"] = concept_targets(self.processor.tokenizer, captions, self.num_concepts)
        if self.features is not None:
            item["feature_maps"] = self.features[index].float()
        else:
            item["image"] = self.split[index]["image"]
        if self.mask_rows is not None:
            row = self.mask_rows[index]
            item["guide_mask"] = deciding_parts_mask(self.processor.image_processor, row["part_mask"],
                                                     row["discriminative_parts"])
        return item

    def collate(self, items: list[dict]) -> dict:
        batch = {"labels": torch.tensor([item["label"] for item in items]),
                 "image_index": torch.tensor([item["index"] for item in items])}
        if self.features is not None:
            batch["feature_maps"] = torch.stack([item["feature_maps"] for item in items])
        else:
            batch["pixel_values"] = self.processor.image_processor([item["image"] for item in items])["pixel_values"]
        batch["input_ids"] = caption_batch(self.processor, [item["caption"] for item in items],
                                           self.max_caption_length)
        if self.num_concepts:
            batch["concept_labels"] = torch.stack([item["concepts"] for item in items])
        if self.mask_rows is not None:
            batch["guide_masks"] = torch.stack([item["guide_mask"] for item in items])
        return batch


def concept_targets(tokenizer, captions: list[str], num_concepts: int) -> torch.Tensor:
    """Semantic regularisation's ground truth: which of the K most frequent caption words occur in ANY of the image's
    captions (multi-hot). The vocabulary is ordered by frequency after the 4 special tokens, so concept k is token
    id 4 + k."""
    first = len(tokenizer.all_special_ids)
    targets = torch.zeros(num_concepts)
    for ids in tokenizer(list(captions), add_special_tokens=False)["input_ids"] if captions else []:
        concept_ids = torch.tensor([i - first for i in ids if first <= i < first + num_concepts], dtype=torch.long)
        targets[concept_ids] = 1.0
    return targets


def cached_features(model, processor, split, name, args, accelerator) -> torch.Tensor:
    """The frozen encoder's feature maps for a split, from the on-disk cache (computed once, on the main process)."""
    from .data.feature_cache import FeatureCache, feature_key

    cache = FeatureCache(args.cache_dir or Path(args.output_dir).parent / "feature-cache")
    # output_stride and the feature stage change the features but not the weights: they are part of the key.
    key = feature_key(model.config.encoder_name, model.encoder, processor.image_processor.data_config(),
                      dataset=split, split=name, encoder_kwargs=model.config.encoder_kwargs,
                      encoder_feature_stage=model.config.encoder_feature_stage)

    @torch.no_grad()
    def encode(rows):
        return model.get_feature_maps(processor.image_processor(rows["image"])["pixel_values"])

    with accelerator.main_process_first():
        return cache.get_or_compute(key, split, encode, batch_size=64, desc=f"encoding {name}")


def make_train_loader(train_data: "CaptionedImages", args) -> DataLoader:
    """Shuffled batches. Workers (`--num-workers`) preprocess the next batches while the model trains; the order is
    the sampler's, the same with 0 or N workers (an item and its caption depend on (seed, epoch, index) only).
    Not persistent workers: each epoch's workers must see `train_data.epoch` (the caption choice), which a worker
    kept from the first epoch would not. Default 0: on the 2-core CPU the data path is ~2 % of a step and a worker
    takes a core from the encoder. Pinned memory only with a GPU (it speeds host-to-device copies, nothing else)."""
    workers = args.num_workers
    return DataLoader(train_data, batch_size=args.batch_size, shuffle=True, collate_fn=train_data.collate,
                      num_workers=workers, pin_memory=workers > 0 and has_accelerator())
