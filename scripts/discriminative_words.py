"""Each class's most telling caption words: the weights of the discriminative caption score of a checkpoint.

    python scripts/discriminative_words.py --model outputs/cam-joint [--top 5]

A model trained with `--cam-caption-target discriminative` holds w[class, word] (positive PMI of word and class in
its training captions, divided by the class's largest) in its checkpoint; every caption map of that model weighs the
caption's words by them. Printed: one line per class, its top words with their weights.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    from cam_joint import CamJointModel, CamJointProcessor
    from cam_joint.discriminative_words import top_words, word_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint folder trained with a discriminative target")
    parser.add_argument("--top", type=int, default=5, help="words per class (default 5)")
    args = parser.parse_args(argv)
    model = CamJointModel.from_pretrained(args.model)
    weights = getattr(model, "caption_word_weights", None)
    if weights is None:
        parser.error(f"{args.model}: cam_caption_target is {model.config.cam_caption_target!r}, not "
                     f"'discriminative': the model has no word weights")
    tokenizer = CamJointProcessor.from_pretrained(args.model).tokenizer
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    print(word_table(labels, top_words(weights, tokenizer, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
