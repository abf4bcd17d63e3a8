"""The caption vocabulary: a word-level `tokenizers` model built from training captions, saved as tokenizer.json.

Lower-cases and removes punctuation before splitting on whitespace, so "a red crown, black wings." and
"a red crown black wings" are the same words (Reed et al.'s CUB captions exist both ways). Decoding joins words with
spaces. Special tokens: <pad>=0, <bos>=1, <eos>=2, <unk>=3 (CamJointConfig's defaults).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
# "'s" stays a word of its own, as the PTB tokenizer of the COCO caption metrics keeps it ("bird's" -> "bird 's"),
# so that a caption the model reproduces exactly also scores as exact.
NORMALIZER = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                   normalizers.Replace(Regex(r"'s\b"), " 's"),
                                   normalizers.Replace(Regex(r"[^\w\s']|'(?!s\b)"), " ")])


def caption_words(caption: str) -> list[str]:
    """The words a caption is made of, exactly as the tokenizer splits it."""
    return NORMALIZER.normalize_str(caption).split()


def build_caption_tokenizer(captions: Iterable[str], min_frequency: int = 1,
                            max_vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the words of `captions` (most frequent first, ties alphabetical)."""
    counts = Counter(word for caption in captions for word in caption_words(caption))
    words = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
    if max_vocab_size is not None:
        words = words[: max(0, max_vocab_size - len(SPECIAL_TOKENS))]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS.values())}
    for word in words:
        vocab.setdefault(word, len(vocab))
    if len(vocab) == len(SPECIAL_TOKENS):
        raise ValueError("no caption words to build a vocabulary from (all captions empty?)")
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = NORMALIZER
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
