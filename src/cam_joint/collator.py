"""Batches for `transformers.Trainer`: `CamJointCollator(processor)` turns rows of a `datasets.Dataset` with the
shared columns (`image`, `label`, `captions`) into the model's inputs. `cam-joint train` builds its batches with the
same `caption_batch` and `pick_caption`, so both paths give the model the same tensors for the same choices."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def pick_caption(captions: Sequence[str], rng: random.Random) -> str:
    """One of an image's captions ("" for an image without any: it still trains the classifier)."""
    return rng.choice(list(captions)) if captions else ""


def caption_batch(processor, captions: Sequence[str], max_caption_length: int) -> torch.Tensor:
    """Teacher-forcing targets (B, T): bos + words + eos, right-padded, cut at `max_caption_length`. An empty caption
    gives a row of padding only, which the caption loss masks out."""
    ids = processor.encode_captions([c or "" for c in captions])
    ids[torch.tensor([not c for c in captions], dtype=torch.bool)] = processor.tokenizer.pad_token_id
    return ids[:, :max_caption_length]


class CamJointCollator:
    """`data_collator` for `transformers.Trainer`: rows {image, label, captions} -> pixel_values, input_ids,
    attention_mask, labels. One caption per image, drawn from its captions by a generator seeded with `seed` (as
    `cam-joint train` draws one per image and epoch). Pass `TrainingArguments(remove_unused_columns=False)`: the
    model's forward takes no `image` or `captions`, so Trainer would otherwise drop the columns this needs.

    Args:
        processor: the model's `CamJointProcessor` (its image processor and caption tokenizer).
        max_caption_length: tokens kept per caption; None = the processor's tokenizer limit is not applied and the
            longest caption of the batch sets the width (give the model's `config.max_caption_length`).
        seed: seeds the caption choice.
    """

    def __init__(self, processor, max_caption_length: int | None = None, seed: int = 0):
        self.processor, self.max_caption_length = processor, max_caption_length
        self.rng = random.Random(seed)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        for column in ("image", "label", "captions"):
            if rows and column not in rows[0]:
                raise KeyError(f"CamJointCollator: the rows have no {column!r} column (they have "
                               f"{sorted(rows[0])}); pass TrainingArguments(remove_unused_columns=False)")
        captions = [pick_caption(row["captions"], self.rng) for row in rows]
        input_ids = caption_batch(self.processor, captions, self.max_caption_length or 10**9)
        return {"pixel_values": self.processor.image_processor([row["image"] for row in rows])["pixel_values"],
                "input_ids": input_ids,
                "attention_mask": (input_ids != self.processor.tokenizer.pad_token_id).long(),
                "labels": torch.tensor([row["label"] for row in rows])}
