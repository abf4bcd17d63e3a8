"""CiderD (fixed-df CIDEr-D, the SCST reward) against pycocoevalcap's own CiderScorer, on generated and real text."""

from __future__ import annotations

import random
import string
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from cam_joint.metrics.cider_d import CiderD

TOL = 1e-9

VOCAB = (
    "a this the bird has red blue black white small large crown wings beak tail breast belly with and is of "
    "long short pointed yellow brown feathers head"
).split()


class FixedDfCiderScorer(CiderScorer):
    """pycocoevalcap's CiderScorer with df and ref_len taken from a training corpus instead of the scored set.

    Only the df source changes; the scoring itself is pycocoevalcap's `compute_cider`. In pycocoevalcap 1.2,
    `compute_cider` sets `self.ref_len = np.log(float(len(self.crefs)))` itself (the number of SCORED images) before
    scoring, so `ref_len` is a property here that returns log(len(training corpus)) and ignores assignments.
    df is pycocoevalcap's own `compute_doc_freq` run on the training references.
    """

    def __init__(self, training_refs: list[list[str]], n: int = 4, sigma: float = 6.0) -> None:
        train = CiderScorer(n=n, sigma=sigma)
        for refs in training_refs:
            train += (None, refs)
        train.compute_doc_freq()
        self._training_df = dict(train.document_frequency)
        self._training_ref_len = float(np.log(float(len(training_refs))))
        super().__init__(n=n, sigma=sigma)

    ref_len = property(lambda self: self._training_ref_len, lambda self, value: None)

    def compute_doc_freq(self) -> None:
        self.document_frequency = defaultdict(float, self._training_df)

    def compute_score(self, option=None, verbose=0):
        # The parent asserts len(ctest) >= max(df), true only when df comes from the scored set itself.
        self.compute_doc_freq()
        scores = self.compute_cider()
        return float(np.mean(scores)), np.array(scores)


def pycoco_scores(candidates: list[list[str]], refs: list[list[list[str]]], sigma: float = 6.0) -> np.ndarray:
    """pycocoevalcap's per-image CIDEr-D, df from the scored references (what COCO evaluation does)."""
    scorer = CiderScorer(n=4, sigma=sigma)
    for cand, rs in zip(candidates, refs):
        scorer += (" ".join(cand), [" ".join(r) for r in rs])
    _, per_image = scorer.compute_score()
    return per_image


def pycoco_fixed_df_scores(
    candidates: list[list[str]], refs: list[list[list[str]]], training: list[list[list[str]]]
) -> np.ndarray:
    scorer = FixedDfCiderScorer([[" ".join(r) for r in rs] for rs in training])
    for cand, rs in zip(candidates, refs):
        scorer += (" ".join(cand), [" ".join(r) for r in rs])
    _, per_image = scorer.compute_score()
    assert scorer.ref_len == pytest.approx(np.log(len(training)))
    return per_image


def _edit(rng: random.Random, words: list[str]) -> list[str]:
    """A paraphrase-like variant: words dropped, replaced, duplicated or inserted."""
    out = []
    for w in words:
        r = rng.random()
        if r < 0.1:
            continue
        if r < 0.2:
            out.append(rng.choice(VOCAB))
        elif r < 0.27:
            out += [w, w]
        else:
            out.append(w)
        if rng.random() < 0.08:
            out.append(rng.choice(VOCAB))
    return out


def make_dataset(seed: int, num_images: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Candidates and references per image: several references of different lengths (1 word up to ~20), repeated
    words, exact copies of a reference, a candidate sharing nothing with its references, an empty one, one word."""
    rng = random.Random(seed)
    candidates, references = [], []
    for i in range(num_images):
        theme = [rng.choice(VOCAB) for _ in range(rng.randint(5, 13))]
        refs = [_edit(rng, theme) for _ in range(rng.randint(2, 7))]
        if i % 5 == 0:
            refs.append([rng.choice(theme)])  # a one-word reference
        if i % 7 == 0:
            refs.append(theme + theme[:6])  # a long one, with repeats
        refs = [r if r else [theme[0]] for r in refs]
        kind = i % 9
        if kind == 0:
            cand = list(refs[0])
        elif kind == 1:
            cand = ["zebra", "xylophone", "quartz"]  # shares nothing with any reference
        elif kind == 2:
            cand = [theme[0]] * 3 + [theme[1]] * 2 + theme[:3]  # repeated words
        elif kind == 3:
            cand = []
        elif kind == 4:
            cand = [theme[-1]]
        else:
            cand = _edit(rng, theme)
        candidates.append(cand)
        references.append(refs)
    return candidates, references


# 1. df from the evaluated references: pycocoevalcap's COCO CIDEr-D


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocoevalcap_when_corpus_is_the_evaluated_set(seed: int) -> None:
    candidates, references = make_dataset(seed, 40)
    expected = pycoco_scores(candidates, references)
    got = CiderD(references).score(candidates, list(range(len(candidates))))
    assert got.shape == (40,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert expected.max() > 1.0 and (expected == 0).sum() >= 2  # non-trivial: high scores, and the zero cases
    # The same through pycocoevalcap's public `Cider` (dict interface of COCOEvalCap).
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(references)}
    res = {i: [" ".join(c)] for i, c in enumerate(candidates)}
    mean, per_image = Cider().compute_score(gts, res)
    np.testing.assert_allclose(got, per_image, rtol=0, atol=TOL)
    assert got.mean() == pytest.approx(mean, abs=TOL)


def test_matches_pycocoevalcap_with_another_sigma() -> None:
    candidates, references = make_dataset(3, 30)
    expected = pycoco_scores(candidates, references, sigma=2.5)
    got = CiderD(references, sigma=2.5).score(candidates, range(30))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert not np.allclose(got, CiderD(references).score(candidates, range(30)))  # sigma does matter


def test_length_counts_bigrams_as_pycocoevalcap() -> None:
    # One-word and two-word captions have pycocoevalcap lengths 0 and 1; references of every small length.
    references = [[["red"], ["red", "bird"], ["a", "red", "bird"]], [["blue"], ["blue", "wings"]], [["x", "y"]]]
    candidates = [["red"], ["red", "bird"], ["blue", "blue", "wings", "wings"], ["x"], []]
    indices = [0, 0, 1, 2, 1]
    expected = pycoco_scores(candidates, [references[i] for i in indices])
    # pycocoevalcap's df comes from the scored refs, which here repeat images: same df as a corpus with repeats.
    got = CiderD([references[i] for i in indices]).score(candidates, range(5))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


# 2. df from a larger, fixed training corpus (the SCST setting)


def test_fixed_df_from_training_corpus_matches_pycocoevalcap_subclass() -> None:
    candidates, training = make_dataset(10, 150)
    subset = list(range(3, 150, 4))  # 37 of the 150 training images, scored with df over all 150
    cands = [candidates[i] for i in subset]
    refs = [training[i] for i in subset]
    expected = pycoco_fixed_df_scores(cands, refs, training)
    cider = CiderD(training)
    assert cider.num_images == 150 and cider.ref_len == pytest.approx(np.log(150))
    got = cider.score(cands, subset)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    # The training df is really used: df from the subset alone gives different numbers.
    assert not np.allclose(got, pycoco_scores(cands, refs))
    # Batch composition does not change a candidate's score (df is fixed): score one by one, and reversed.
    one_by_one = np.array([cider.score([c], [i])[0] for c, i in zip(cands, subset)])
    np.testing.assert_array_equal(one_by_one, got)
    np.testing.assert_array_equal(cider.score(cands[::-1], subset[::-1])[::-1], got)


def test_fixed_df_subclass_reduces_to_pycocoevalcap_on_its_own_set() -> None:
    # Sanity check of the reference implementation itself: training corpus == scored set gives plain CiderScorer.
    candidates, references = make_dataset(11, 25)
    np.testing.assert_allclose(
        pycoco_fixed_df_scores(candidates, references, references), pycoco_scores(candidates, references), atol=1e-12
    )


# 3. Token ids


def test_token_ids_give_the_same_numbers_as_words() -> None:
    candidates, references = make_dataset(4, 30)
    vocab: dict[str, int] = {}
    ids = lambda caption: [vocab.setdefault(w, len(vocab) + 3) for w in caption]  # noqa: E731
    id_refs = [[ids(r) for r in rs] for rs in references]
    id_cands = [ids(c) for c in candidates]
    by_words = CiderD(references).score(candidates, range(30))
    cider_ids = CiderD(id_refs)
    np.testing.assert_array_equal(cider_ids.score(id_cands, range(30)), by_words)
    # Ids as numpy arrays / torch tensors (what a decoder produces), and indices as a tensor.
    np.testing.assert_array_equal(
        cider_ids.score([np.array(c, dtype=np.int64) for c in id_cands], np.arange(30)), by_words
    )
    np.testing.assert_array_equal(
        cider_ids.score([torch.tensor(c, dtype=torch.long) for c in id_cands], torch.arange(30)), by_words
    )
    np.testing.assert_array_equal(
        CiderD([[np.array(r) for r in rs] for rs in id_refs]).score(id_cands, range(30)), by_words
    )


# 4. Behaviour


def test_reference_copy_beats_random_caption_and_reference_order_is_irrelevant() -> None:
    rng = random.Random(1005)  # not make_dataset's seed, or the "random" captions replay the themes
    _, references = make_dataset(5, 50)
    cider = CiderD(references)
    copies = [list(rs[0]) for rs in references]
    randoms = [[rng.choice(VOCAB) for _ in range(len(rs[0]))] for rs in references]
    copy_scores = cider.score(copies, range(50))
    random_scores = cider.score(randoms, range(50))
    assert (copy_scores > random_scores).all()
    assert copy_scores.mean() > 3 * random_scores.mean()

    shuffled = []
    for rs in references:
        rs = list(rs)
        rng.shuffle(rs)
        shuffled.append(rs)
    np.testing.assert_allclose(CiderD(shuffled).score(copies, range(50)), copy_scores, rtol=1e-12, atol=0)
    # Image order in the corpus does not matter either (only which references each image has).
    perm = list(range(50))
    rng.shuffle(perm)
    permuted = CiderD([references[p] for p in perm])
    np.testing.assert_allclose(
        permuted.score(copies, [perm.index(i) for i in range(50)]), copy_scores, rtol=1e-12, atol=0
    )


def test_empty_candidate_scores_zero() -> None:
    _, references = make_dataset(6, 10)
    scores = CiderD(references).score([[], (), ["bird"], []], [0, 1, 2, 9])
    assert scores[0] == 0.0 and scores[1] == 0.0 and scores[3] == 0.0
    assert CiderD(references).score([], []).shape == (0,)


# 5. Bad input


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        CiderD([])
    with pytest.raises(ValueError, match="image 2 of the corpus has no reference"):
        CiderD([[["a", "bird"]], [["b"]], [], [["c"]]])
    with pytest.raises(TypeError, match=r"corpus\[0\]\[1\] is a str"):
        CiderD([[["a"], "a bird"]])
    cider = CiderD([[["a", "bird"]], [["a", "fish"]]])
    with pytest.raises(ValueError, match="3 candidates but 2 image_indices"):
        cider.score([["a"], ["b"], ["c"]], [0, 1])
    with pytest.raises(IndexError, match="image index 2 .*corpus of 2 images"):
        cider.score([["a"], ["b"]], [0, 2])
    with pytest.raises(IndexError, match="image index -1 "):
        cider.score([["a"]], [-1])
    with pytest.raises(TypeError, match="candidate 1 is a str"):
        cider.score([["a"], "a bird"], [0, 1])
    with pytest.raises(ValueError, match="n must be >= 1"):
        CiderD([[["a"]]], n=0)


def test_single_image_corpus_warns_and_scores_zero() -> None:
    with pytest.warns(UserWarning, match="single image"):
        cider = CiderD([[["a", "red", "bird"], ["a", "bird"]]])
    assert cider.score([["a", "red", "bird"], ["zebra"]], [0, 0]).tolist() == [0.0, 0.0]
    # pycocoevalcap agrees.
    assert pycoco_scores([["a", "red", "bird"]], [[["a", "red", "bird"], ["a", "bird"]]]).tolist() == [0.0]


# Real captions (CUB, Reed et al. text_c10), when ../shared/data is present


def _cub_captions(root: Path, num_classes: int, per_class: int) -> list[list[list[str]]]:
    """Ten tokenized captions per image (`per_class` images of `num_classes` classes spread over the 200):
    lower-cased, punctuation stripped, whitespace split."""
    strip = str.maketrans({c: " " for c in string.punctuation})
    class_dirs = sorted(p for p in (root / "cub" / "text_c10").iterdir() if p.is_dir())
    step = max(1, len(class_dirs) // num_classes)
    images = []
    for class_dir in class_dirs[::step][:num_classes]:
        for path in sorted(class_dir.glob("*.txt"))[:per_class]:
            lines = [ln.lower().translate(strip).split() for ln in path.read_text(encoding="utf-8").splitlines()]
            lines = [ln for ln in lines if ln]
            assert len(lines) >= 10, path
            images.append(lines[:10])
    assert len(images) == num_classes * per_class
    return images


def test_real_cub_captions_match_pycocoevalcap(shared_data: Path) -> None:
    if not (shared_data / "cub" / "text_c10").is_dir():
        pytest.skip(f"CUB captions not found at {shared_data / 'cub' / 'text_c10'}")
    images = _cub_captions(shared_data, num_classes=20, per_class=30)  # 600 images
    scored = images[::3]  # 200 of them
    candidates = [caps[0] for caps in scored]
    references = [caps[1:] for caps in scored]
    # df from the evaluated references (COCO evaluation).
    got = CiderD(references).score(candidates, range(len(scored)))
    expected = pycoco_scores(candidates, references)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert 0.1 < expected.mean() < 5 and len(expected) == 200
    # df from all 600 images (SCST on training captions).
    training = [caps[1:] for caps in images]
    got_fixed = CiderD(training).score(candidates, range(0, len(images), 3))
    np.testing.assert_allclose(got_fixed, pycoco_fixed_df_scores(candidates, references, training), rtol=0, atol=TOL)
