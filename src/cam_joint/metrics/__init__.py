"""Evaluation metrics: top-k accuracy, COCO caption metrics (an `evaluate` module), CAM agreement, pointing game.

The caption metrics live in `coco_caption.py`, an `evaluate` metric module loaded from its file path (no download):
`evaluate.load(caption_metric_path())`, or `compute_caption_metrics(...)` here. That file imports only installed
libraries because `evaluate` copies it alone into its modules cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .cam_agreement import (
    CUB_NUM_PARTS,
    cam_cosine_agreement,
    cam_cosine_similarities,
    pointing_game_keypoints,
    pointing_game_mask,
    resize_center_crop_box,
)

CAPTION_METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def caption_metric_path() -> str:
    """Absolute path of the `coco_caption.py` evaluate module (pass it to `evaluate.load`)."""
    return str(Path(__file__).resolve().with_name("coco_caption.py"))


def compute_caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    java_timeout: float | None = None,
    meteor: object | None = None,
) -> dict[str, float | list[float]]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and `CIDEr_per_image`) exactly as pycocoevalcap computes them.

    Loads the evaluate module from its local path (offline) and computes in memory. Needs Java on PATH. Raises
    ValueError for no predictions or mismatched lengths, RuntimeError if Java is missing or METEOR fails; see
    `coco_caption.py` for every edge case. `meteor`: an open `coco_caption.MeteorProcess` to reuse across calls
    (saves METEOR's ~10 s start-up each time; the caller closes it).
    """
    predictions, references = list(predictions), list(references)
    for i, refs in enumerate(references):
        if isinstance(refs, str):  # list("a bird") would silently become one reference per character
            raise TypeError(f"references[{i}] is a str; each image needs a list of reference strings.")
    references = [list(r) for r in references]
    # Checked here too so the message is ours whatever evaluate's own check says.
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists; need one of each per image."
        )
    if not predictions:
        raise ValueError("no predictions to score (empty list); need at least one image.")
    import evaluate  # deferred: it pulls in datasets/pyarrow, which nothing else in this package needs

    metric = evaluate.load(caption_metric_path(), keep_in_memory=True)
    kwargs: dict = {} if java_timeout is None else {"java_timeout": java_timeout}
    if meteor is not None:
        kwargs["meteor"] = meteor
    return metric.compute(predictions=predictions, references=references, **kwargs)


def topk_accuracy(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence[int], ks: Iterable[int] = (1, 5)
) -> dict[str, float]:
    """Fraction of images whose label is among the k highest logits, for each k: {"top1": ..., "top5": ...}.

    Ties are broken as `torch.topk` breaks them. With fewer classes than k, every label is in the top k and the
    score is 1.0 (k is clamped to the number of classes) rather than an error, so small models still evaluate.
    """
    logits_t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).detach()
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach()
    if logits_t.ndim != 2 or logits_t.shape[0] == 0:
        raise ValueError(f"logits must have shape (N, num_classes) with N > 0; got {tuple(logits_t.shape)}")
    if labels_t.shape != (logits_t.shape[0],):
        raise ValueError(f"labels must have shape ({logits_t.shape[0]},); got {tuple(labels_t.shape)}")
    num_classes = logits_t.shape[1]
    labels_t = labels_t.to(logits_t.device, torch.long)
    if bool(((labels_t < 0) | (labels_t >= num_classes)).any()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got min {int(labels_t.min())}, max {int(labels_t.max())}"
        )
    ks = list(ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks}")
    top = logits_t.topk(min(max(ks), num_classes), dim=1).indices  # (N, kmax), best first
    correct = top == labels_t[:, None]
    return {f"top{k}": float(correct[:, : min(k, num_classes)].any(dim=1).double().mean()) for k in ks}


__all__ = [
    "CAPTION_METRIC_KEYS",
    "CUB_NUM_PARTS",
    "caption_metric_path",
    "compute_caption_metrics",
    "topk_accuracy",
    "cam_cosine_agreement",
    "cam_cosine_similarities",
    "pointing_game_mask",
    "pointing_game_keypoints",
    "resize_center_crop_box",
]
