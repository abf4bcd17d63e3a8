"""The word weights of the discriminative caption score (`cam_caption_target="discriminative"`).

    w[c, v] = max(0, PMI(v, c)) / max_v' max(0, PMI(v', c)),     PMI(v, c) = log  n(v, c) N / (n(v) n(c))

with n(v, c) the number of times word v occurs in the training captions of class c, n(v) and n(c) its marginals and
N the number of caption words. Special tokens (pad, bos, eos, unk) weigh 0.

Why these choices:

* Positive PMI says how much more often a word occurs with the class than on average: a word every class uses
  ("bird", "a", "has") gets PMI ~0, so it weighs ~0; a word that only that class uses gets the largest weight. Words
  the class uses LESS than average (negative PMI) are not evidence for it: they weigh 0, not less than 0, so the
  score stays a sum of (weighted) log-probabilities of words the caption does say.
* Normalised by the class's largest value, not to sum 1: a caption's score then stays on the scale of the
  log-probability of its most telling words, whatever the number of telling words a class has (sum-to-1 would shrink
  each weight of a class described by many words, and so its map's gradient, relative to a class with one word),
  and every class's most telling word weighs exactly 1.

Computed once, at the start of training, from the training split; saved in the checkpoint. Not remote code: a
checkpoint holds the weights themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def word_class_counts(token_ids: Sequence[Sequence[int]], labels: Sequence[int], num_labels: int,
                      vocab_size: int) -> Tensor:
    """n(v, c): how often each token id occurs in the captions of each class, (num_labels, vocab_size)."""
    if len(token_ids) != len(labels):
        raise ValueError(f"{len(token_ids)} captions but {len(labels)} labels")
    counts = torch.zeros(num_labels, vocab_size, dtype=torch.float64)
    for ids, label in zip(token_ids, labels):
        if not 0 <= int(label) < num_labels:
            raise ValueError(f"class id {label} is outside 0..{num_labels - 1}")
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        counts[int(label)] += torch.bincount(ids, minlength=vocab_size).double()[:vocab_size]
    return counts


def positive_pmi_word_weights(token_ids: Sequence[Sequence[int]], labels: Sequence[int], num_labels: int,
                              vocab_size: int, ignored_ids: Sequence[int] = ()) -> Tensor:
    """w[c, v] (num_labels, vocab_size), float32: positive PMI of word and class, divided by the class's largest
    (module docstring). `ignored_ids` (the special tokens) weigh 0; a class without captions weighs every word 0."""
    counts = word_class_counts(token_ids, labels, num_labels, vocab_size)
    counts[:, list(ignored_ids)] = 0
    total = counts.sum()
    if total == 0:
        raise ValueError("no caption words to weigh: every training caption is empty")
    joint = counts * total
    marginal = counts.sum(1, keepdim=True) * counts.sum(0, keepdim=True)
    pmi = torch.where(counts > 0, torch.log(joint.clamp_min(1e-300) / marginal.clamp_min(1e-300)),
                      torch.zeros_like(counts))
    positive = pmi.clamp_min(0)
    return (positive / positive.amax(1, keepdim=True).clamp_min(1e-12)).float()


def caption_word_weights(tokenizer, captions_per_image: Sequence[Sequence[str]], labels: Sequence[int],
                         num_labels: int) -> Tensor:
    """`positive_pmi_word_weights` of a split: every caption of every image, tokenised by the model's tokenizer."""
    texts, caption_labels = [], []
    for captions, label in zip(captions_per_image, labels):
        texts.extend(captions)
        caption_labels.extend([label] * len(captions))
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return positive_pmi_word_weights(token_ids, caption_labels, num_labels, len(tokenizer),
                                     ignored_ids=tokenizer.all_special_ids)


def top_words(weights: Tensor, tokenizer, count: int = 5) -> list[list[tuple[str, float]]]:
    """Each class's `count` highest-weighted words with their weights (weight > 0 only)."""
    vocab = {index: word for word, index in tokenizer.get_vocab().items()}
    rows = []
    for row in weights:
        values, indices = row.float().topk(min(count, row.numel()))
        rows.append([(vocab.get(int(i), str(int(i))), float(v)) for v, i in zip(values, indices) if v > 0])
    return rows


def word_table(label_names: Sequence[str], rows: Sequence[Sequence[tuple[str, float]]],
               max_classes: int | None = None) -> str:
    """A Markdown table of `top_words`: class, then its words as `word (weight)`; with `max_classes`, the first
    that many classes and a line saying how many more there are."""
    shown = len(rows) if max_classes is None else min(max_classes, len(rows))
    lines = ["| class | top words (weight) |", "| --- | --- |"]
    for name, words in zip(label_names[:shown], rows[:shown]):
        lines.append(f"| {name} | " + ", ".join(f"{w} ({v:.2f})" for w, v in words) + " |")
    if shown < len(rows):
        lines.append(f"\n({len(rows) - shown} more classes: `python scripts/discriminative_words.py --model DIR`.)")
    return "\n".join(lines)


__all__ = ["word_class_counts", "positive_pmi_word_weights", "caption_word_weights", "top_words", "word_table"]
