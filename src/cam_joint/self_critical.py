"""Self-critical sequence training (SCST; Rennie et al., CVPR 2017), the standard captioning fine-tune.

After cross-entropy training, the captioner is trained to maximise the CIDEr-D of its own captions: for each image
one caption is sampled and one greedy-decoded, and the sampled caption's log-probability is pushed up by how much
its reward beats the greedy one's (the greedy caption is the baseline, so no value network is needed):

    L_scst = - sum_t (r(w^s) - r(w^greedy)) * log p(w^s_t | w^s_<t, image)   (averaged over the sampled tokens)

The reward is CIDEr-D with document frequencies from the TRAINING captions, fixed for the whole run (so the reward
of a caption does not depend on which batch it is in). As in the reference SCST code, eos counts as a word of both
the candidates and the references: a caption that stops mid-phrase, or never stops, loses the n-grams ending in eos.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .losses_cam_joint import self_critical_loss  # noqa: F401  (the loss lives with the others)
from .metrics.cider_d import CiderD


class SelfCriticalReward:
    """CIDEr-D advantages of sampled over greedy captions, against each training image's own references.

    Args:
        tokenizer: the caption tokenizer (captions become token ids exactly as the captioner sees them).
        captions: the training split's captions, one list per image (in dataset order; an image may have none).
    """

    def __init__(self, tokenizer, captions: Sequence[Sequence[str]]):
        self.eos = tokenizer.eos_token_id
        with_captions = [i for i, caps in enumerate(captions) if caps]
        if not with_captions:
            raise ValueError("self-critical training needs training captions: no image of the training split has one")
        flat = [c for i in with_captions for c in captions[i]]
        ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
        corpus, start = [], 0
        for i in with_captions:
            corpus.append([[*row, self.eos] for row in ids[start: start + len(captions[i])]])
            start += len(captions[i])
        self.cider = CiderD(corpus)
        # Dataset index -> position in the reward corpus (-1: the image has no caption, so no reward).
        self.corpus_position = torch.full((len(captions),), -1, dtype=torch.long)
        self.corpus_position[torch.tensor(with_captions)] = torch.arange(len(with_captions))

    def caption_tokens(self, ids: Tensor) -> list[list[int]]:
        """Rows of (bos, w1, ..., eos, pad...) -> [w1, ..., eos] (what the reward scores). Decoding pads a row only
        after its eos; a pad (or bos) SAMPLED mid-caption stays in, as a word that matches no reference."""
        rows = []
        for row in ids[:, 1:].tolist():
            end = row.index(self.eos) + 1 if self.eos in row else len(row)
            rows.append(row[:end])
        return rows

    def __call__(self, sampled_ids: Tensor, greedy_ids: Tensor, image_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(advantage, sampled reward, greedy reward), each (B,), on `sampled_ids`' device. Images without captions
        get advantage 0 (they do not move the captioner)."""
        positions = self.corpus_position[image_index.cpu()]
        has_refs = positions >= 0
        sampled = torch.zeros(len(positions), dtype=torch.float64)
        greedy = torch.zeros(len(positions), dtype=torch.float64)
        if bool(has_refs.any()):
            keep = has_refs.nonzero().squeeze(1).tolist()
            refs = positions[has_refs].tolist()
            sampled_tokens, greedy_tokens = self.caption_tokens(sampled_ids), self.caption_tokens(greedy_ids)
            sampled[has_refs] = torch.from_numpy(self.cider.score([sampled_tokens[k] for k in keep], refs))
            greedy[has_refs] = torch.from_numpy(self.cider.score([greedy_tokens[k] for k in keep], refs))
        device = sampled_ids.device
        return (sampled - greedy).float().to(device), sampled.float().to(device), greedy.float().to(device)
