"""CIDEr-D with document frequencies fixed from a corpus: the reward of self-critical sequence training.

Self-critical sequence training (Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning") rewards
each sampled caption with its CIDEr-D against the image's references, the document frequencies (df) coming from a
fixed corpus, the TRAINING captions, rather than from the batch being scored (a batch of 64 images would give noisy,
batch-dependent idf weights).

The numbers are exactly those of pycocoevalcap's `CiderScorer` (the CIDEr-D of the COCO caption evaluation), given
the same df corpus:

- n-grams of orders 1..n (n = 4), counted in each caption (term frequencies);
- df(g) = number of corpus IMAGES whose references (the union of their n-grams) contain g, each image counted once;
- ref_len = log(number of images in the corpus); idf(g) = ref_len - log(max(1, df(g))), so an n-gram never seen in
  the corpus gets the largest weight, ref_len;
- each caption is a vector per order, tf * idf, with its Euclidean norm per order;
- per reference and order: sum over the candidate's n-grams of min(v_cand, v_ref) * v_ref (the clipped tf of
  CIDEr-D), divided by norm_cand * norm_ref when both are non-zero, times the gaussian length penalty
  exp(-(len_cand - len_ref)^2 / (2 sigma^2)) with sigma = 6;
- score = mean over orders, summed over references and divided by their number, times 10.

The corpus is cooked once in `__init__` (df, idf, every reference's term frequencies, norms and length), so
scoring a batch only builds the candidates' vectors. pycocoevalcap scores the evaluated set against itself; to get
its numbers for an evaluation set, pass that set's references as the corpus.

Notes:
- Tokens are any hashables: token ids (ints, also numpy integers) or words (str). Ids and words give the same
  numbers for the same captions. Candidates must already be cut at EOS and stripped of padding / BOS; a numpy array or
  torch tensor of ids is accepted (converted with `.tolist()`), a bare str is refused (it would be read as a
  sequence of characters).
- With a corpus of one image every idf is log 1 - log 1 = 0 and every score 0.0 (what pycocoevalcap returns too);
  this warns.
- pycocoevalcap only works with n = 4 (its `cook_refs` / `cook_test` ignore the scorer's n); other n are the natural
  generalisation, not checked against it.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Hashable, Sequence

import numpy as np

__all__ = ["CiderD"]

NGram = tuple  # a tuple of 1..n tokens


def _as_tokens(caption: object, what: str) -> tuple:
    """`caption` as a tuple of tokens; a str is refused (it would silently become a sequence of characters)."""
    if isinstance(caption, (str, bytes)):
        raise TypeError(f"{what} is a {type(caption).__name__}; pass a sequence of tokens (e.g. caption.split()).")
    if hasattr(caption, "tolist"):  # numpy array / torch tensor of ids (a tensor's elements hash by identity)
        caption = caption.tolist()
    return tuple(caption)  # type: ignore[arg-type]


def _count_ngrams(tokens: tuple, n: int) -> dict[NGram, int]:
    """Term frequency of every n-gram of orders 1..n, in pycocoevalcap's `precook` insertion order."""
    counts: dict[NGram, int] = {}
    get = counts.get
    size = len(tokens)
    for k in range(1, n + 1):
        for i in range(size - k + 1):
            g = tokens[i : i + k]
            counts[g] = get(g, 0) + 1
    return counts


def _length(tokens: tuple) -> int:
    """The caption length used by the length penalty, as pycocoevalcap computes it.

    pycocoevalcap's `counts2vec` does `if n == 1: length += term_freq` with n = len(ngram) - 1, i.e. it counts the
    BIGRAM occurrences, not the words: length = number of words - 1 (0 for zero or one word). Replicated on purpose;
    only differences of lengths enter the penalty, so this matters only for captions of zero or one word.
    """
    return max(len(tokens) - 1, 0)


class CiderD:
    """CIDEr-D with document frequencies fixed from `corpus` (e.g. the training captions), as SCST's reward.

    `corpus[i]` is the list of reference captions of image i, each a sequence of tokens (int ids or str words).
    `score(candidates, image_indices)` gives each candidate's CIDEr-D against the references of
    `corpus[image_indices[k]]`, identical to pycocoevalcap's `CiderScorer` when its df comes from the same corpus.

    Args:
        corpus: reference captions per image; at least one image, at least one reference per image (a reference may be
            empty). It defines df, idf and ref_len = log(len(corpus)), and the references scored against.
        n: highest n-gram order (4 in CIDEr-D; pycocoevalcap supports only 4).
        sigma: standard deviation of the gaussian length penalty (6 in CIDEr-D).

    Raises:
        ValueError: empty corpus, an image without references (its index named), n < 1 or sigma <= 0.
        TypeError: a caption given as a str instead of a sequence of tokens.
    Warns:
        UserWarning: a corpus of one image (every idf is 0, so every score is 0.0).
    """

    def __init__(self, corpus: Sequence[Sequence[Sequence[Hashable]]], n: int = 4, sigma: float = 6.0) -> None:
        if n < 1:
            raise ValueError(f"CiderD: n must be >= 1 (CIDEr-D uses 4); got {n}")
        if not sigma > 0:
            raise ValueError(f"CiderD: sigma must be > 0 (CIDEr-D uses 6.0); got {sigma}")
        if len(corpus) == 0:
            raise ValueError("CiderD: the corpus is empty; document frequencies need at least one image's references.")
        self.n = n
        self.sigma = float(sigma)
        num_images = len(corpus)

        # 1. Cook every reference (term frequencies) and count df once per image over the union of its references.
        # n-gram tuples are interned so that the many copies of common n-grams share one object.
        interned: dict[NGram, NGram] = {}
        df: dict[NGram, int] = {}
        cooked: list[list[tuple[dict[NGram, int], int]]] = []
        for i, refs in enumerate(corpus):
            if isinstance(refs, (str, bytes)):
                raise TypeError(f"CiderD: corpus[{i}] is a str; it must be a list of reference captions (token lists).")
            if len(refs) == 0:
                raise ValueError(f"CiderD: image {i} of the corpus has no reference caption; every image needs one.")
            image_refs = []
            seen: set[NGram] = set()
            for j, ref in enumerate(refs):
                tokens = _as_tokens(ref, f"CiderD: corpus[{i}][{j}]")
                counts = {interned.setdefault(g, g): tf for g, tf in _count_ngrams(tokens, n).items()}
                seen.update(counts)
                image_refs.append((counts, _length(tokens)))
            for g in seen:
                df[g] = df.get(g, 0) + 1
            cooked.append(image_refs)

        if num_images == 1:
            warnings.warn(
                "CiderD: the corpus has a single image, so every idf weight is log(1) - log(max(1, df)) = 0 and every "
                "CIDEr-D score is 0.0 (pycocoevalcap returns the same). Build it from the whole training set.",
                UserWarning,
                stacklevel=2,
            )

        # 2. idf = ref_len - log(max(1, df)), with np.log on floats exactly as pycocoevalcap. df values are small
        # integers, so each distinct one is logged once.
        self.ref_len: float = float(np.log(float(num_images)))
        log_df = {d: float(np.log(max(1.0, float(d)))) for d in set(df.values())}
        self._idf: dict[NGram, float] = {g: self.ref_len - log_df[d] for g, d in df.items()}
        # An n-gram absent from the corpus: df 0 -> log(max(1, 0)) = 0 -> idf = ref_len.
        self._unseen_idf: float = self.ref_len - float(np.log(1.0))

        # 3. Every reference's norms per order and length. Its vector is tf * idf; it is kept as the tf dict (small
        # ints, shared objects) and multiplied by the idf when scoring, which saves a float object per entry and
        # gives the same value pycocoevalcap computes, float(tf) * (ref_len - log(df)).
        idf = self._idf
        self._refs: list[list[tuple[dict[NGram, int], tuple[float, ...], int]]] = []
        for image_refs in cooked:
            vectors = []
            for counts, length in image_refs:
                sq = [0.0] * n
                for g, tf in counts.items():
                    v = float(tf) * idf[g]
                    sq[len(g) - 1] += v * v  # numpy's pow(x, 2), as pycocoevalcap uses, is x * x
                vectors.append((counts, tuple(math.sqrt(x) for x in sq), length))
            self._refs.append(vectors)

    @property
    def num_images(self) -> int:
        """Number of images in the corpus (ref_len = log of it)."""
        return len(self._refs)

    def score(self, candidates: Sequence[Sequence[Hashable]], image_indices: Sequence[int]) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its corpus image, shape (len(candidates),), float64.

        Args:
            candidates: one caption per row, a sequence of tokens (same kind as the corpus: ids or words), already cut
                at EOS and without padding. An empty candidate scores 0.0.
            image_indices: for each candidate, the index of its image in the corpus (0 <= index < num_images).

        Raises:
            ValueError: different numbers of candidates and image indices (both named).
            IndexError: an image index outside the corpus (the index and the corpus size named).
            TypeError: a candidate given as a str, or a non-integer image index.
        """
        if len(candidates) != len(image_indices):
            raise ValueError(
                f"CiderD.score: {len(candidates)} candidates but {len(image_indices)} image_indices; "
                "need one image index per candidate."
            )
        if hasattr(image_indices, "tolist"):
            image_indices = image_indices.tolist()
        num_images = len(self._refs)
        scores = np.zeros(len(candidates), dtype=np.float64)
        for k, (candidate, index) in enumerate(zip(candidates, image_indices)):
            index = operator.index(index)
            if not 0 <= index < num_images:
                raise IndexError(
                    f"CiderD.score: image index {index} (candidate {k}) is out of range for a corpus of "
                    f"{num_images} images."
                )
            scores[k] = self._score_one(_as_tokens(candidate, f"CiderD.score: candidate {k}"), self._refs[index])
        return scores

    def _score_one(self, tokens: tuple, refs: list[tuple[dict[NGram, int], tuple[float, ...], int]]) -> float:
        """pycocoevalcap's per-image CIDEr-D (`compute_cider`'s loop body): the same operations in the same order,
        so the same float64 result, minus the terms that are exactly 0 (n-grams absent from a reference)."""
        n = self.n
        idf = self._idf
        # Candidate vector, tf * idf, with its norms per order. Only n-grams seen in the corpus can occur in a
        # reference, so only those (with their idf) are kept for the dot products, grouped by order, in insertion
        # order (the order of pycocoevalcap's sum).
        seen: list[list[tuple[NGram, float, float]]] = [[] for _ in range(n)]
        sq = [0.0] * n
        for g, tf in _count_ngrams(tokens, n).items():
            o = len(g) - 1
            w = idf.get(g)
            if w is None:
                v = float(tf) * self._unseen_idf
            else:
                v = float(tf) * w
                seen[o].append((g, v, w))
            sq[o] += v * v
        norm_hyp = [math.sqrt(x) for x in sq]
        length_hyp = _length(tokens)
        denom = 2 * self.sigma**2

        total = [0.0] * n  # sum over references, per order
        for ref_tf, norm_ref, length_ref in refs:
            get = ref_tf.get
            delta = float(length_hyp - length_ref)
            penalty = math.e ** (-(delta**2) / denom)  # gaussian length penalty, the same expression as pycocoevalcap
            for o in range(n):
                val = 0.0
                for g, v, w in seen[o]:
                    t = get(g)
                    if t is not None:  # an absent n-gram adds min(v, 0) * 0 = 0 in pycocoevalcap
                        r = float(t) * w
                        val += (r if r < v else v) * r  # CIDEr-D's clipping: min(v_hyp, v_ref) * v_ref
                if norm_hyp[o] != 0 and norm_ref[o] != 0:
                    val /= norm_hyp[o] * norm_ref[o]
                total[o] += val * penalty
        # Mean over orders, divided by the number of references, times 10. np.mean of a few values is a plain
        # left-to-right sum / n (not builtin sum(), which compensates rounding since Python 3.12).
        acc = 0.0
        for x in total:
            acc += x
        return acc / n / len(refs) * 10.0
