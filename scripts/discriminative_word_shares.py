"""Where the discriminative caption score's weight falls on the synthetic birds: on the words that name what decides
the class, on the distractors' words, or on neutral words.

    python scripts/discriminative_word_shares.py [--distractors 2] [--classes 20] [--per-class 200] [--seed 0]

Builds the training split `cam-joint train --synthetic-distractors N` trains on, its caption tokenizer and the word
weights training fixes at its start (`cam_joint.discriminative_words.caption_word_weights`), then splits each class's
weight mass w[c, :] (sum over the vocabulary) in three, from the dataset's own ground truth:

* ``deciding``: words naming the class's discriminative parts (`discriminative_parts`, with the captions' synonyms:
  "cap" for the crown, "bill" for the beak, ...) or their colours (the class's `ClassSpec` colours);
* ``distractor``: words naming a part painted as a distractor on any of the class's training images
  (`distractor_parts`), or a saturated colour that is not one of the class's (distractors are painted in those);
* ``neutral``: everything else (the other parts, neutral colours, sizes, "bird", "the", ...).

A word in two groups counts in the first (a deciding colour also painted on a distractor is "deciding"). Printed:
the mean share of each group over classes (and its range), each group's top words by total weight, and for
comparison the share of the captions' word occurrences in each group: the weight each group gets from the plain
`sum` score, which weighs every token 1 (eos excluded).
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def word_groups(spec, distractor_parts: set[str], part_words: dict, saturated: set[str]) -> dict[str, set[str]]:
    """The deciding and distractor word sets of one class (every other word is neutral)."""
    def words_of(parts):
        return {word for part in parts for phrase in part_words[part] for word in phrase.split()}

    deciding = words_of(spec.discriminative_parts) | set(spec.colours.values())
    distractor = (words_of(distractor_parts - set(spec.discriminative_parts)) | (saturated - deciding)) - deciding
    return {"deciding": deciding, "distractor": distractor}


def weight_shares(weights, vocab: dict[str, int], groups_per_class: list[dict[str, set[str]]]):
    """(share of each group per class, total weight per (group, word)) for weights (num_labels, vocab_size)."""
    words = {index: word for word, index in vocab.items()}
    shares, totals = [], defaultdict(float)
    for row, groups in zip(weights.tolist(), groups_per_class):
        mass = defaultdict(float)
        for index, value in enumerate(row):
            word = words[index]
            group = next((g for g, members in groups.items() if word in members), "neutral")
            mass[group] += value
            totals[group, word] += value
        total = sum(mass.values()) or 1.0
        shares.append({g: mass[g] / total for g in ("deciding", "distractor", "neutral")})
    return shares, totals


def main(argv: list[str] | None = None) -> int:
    from cam_joint import build_caption_tokenizer
    from cam_joint.data.synthetic import _PART_WORDS, SATURATED_COLOURS, class_specs, make_synthetic_dataset
    from cam_joint.discriminative_words import caption_word_weights, word_class_counts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distractors", type=int, default=2)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train = make_synthetic_dataset(num_classes=args.classes, train_per_class=args.per_class, validation_per_class=1,
                                   test_per_class=1, seed=args.seed, distractors=args.distractors)["train"]
    train = train.select_columns([c for c in train.column_names if c not in ("image", "part_mask")])
    captions, labels = train["captions"], train["label"]
    tokenizer = build_caption_tokenizer([c for row in captions for c in row])
    weights = caption_word_weights(tokenizer, captions, labels, args.classes)
    painted = defaultdict(set)
    for label, parts in zip(labels, train["distractor_parts"] if args.distractors else [[]] * len(labels)):
        painted[label].update(parts)
    specs = class_specs(args.classes)
    groups = [word_groups(specs[c], painted[c], _PART_WORDS, set(SATURATED_COLOURS)) for c in range(args.classes)]
    shares, totals = weight_shares(weights, tokenizer.get_vocab(), groups)
    texts = [(c, label) for row, label in zip(captions, labels) for c in row]
    counts = word_class_counts(tokenizer([t for t, _ in texts], add_special_tokens=False)["input_ids"],
                               [label for _, label in texts], args.classes, len(tokenizer))
    token_shares, _ = weight_shares(counts, tokenizer.get_vocab(), groups)
    print(f"synthetic birds: {args.classes} classes x {args.per_class} training images, {args.distractors} "
          f"distractors, seed {args.seed}; vocabulary {len(tokenizer)} tokens")
    print("| words | share of each class's weight: mean | min | max | top words (total weight over classes) | "
          "share of the word occurrences (the sum score) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for group in ("deciding", "distractor", "neutral"):
        values = [s[group] for s in shares]
        top = sorted(((v, w) for (g, w), v in totals.items() if g == group and v > 0), reverse=True)[:6]
        print(f"| {group} | {sum(values) / len(values):.3f} | {min(values):.3f} | {max(values):.3f} | "
              + ", ".join(f"{w} ({v:.1f})" for v, w in top)
              + f" | {sum(s[group] for s in token_shares) / len(token_shares):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
