"""Caption generation of CamJointModel through Transformers' generation loop, checked against references that do
not share its machinery.

A missing or wrong cache reorder in beam search gives wrong beams with NO error, so beam search is compared with a
hand-written beam search that keeps beams as token lists and scores every candidate with the model's full
teacher-forced log-probability, recomputed from scratch without any cache. The reference replicates the beam
semantics of `transformers.generation.utils.GenerationMixin._beam_search` (top 2*num_beams candidates, only the
top num_beams may finish, length penalty on finished hypotheses, the early-stopping heuristic and
`early_stopping=True/False/"never"`). A last test breaks the reorder on purpose and checks the comparison then fails.

Random small models: the captioner's weights are redrawn with a larger spread than the default init so that
next-token distributions are peaked and candidates are well separated (no near-ties between the cached and the
uncached computations), and the eos logit is biased so that some captions end early and some run to max_length.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList)

from cam_joint import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, \
    build_caption_tokenizer

PAD, BOS, EOS, UNK = 0, 1, 2, 3
NEVER = [PAD, BOS]  # suppress_tokens of every CamJoint generation config
VOCAB, EMBED_DIM, MAX_LEN = 30, 32, 12
# Smallest gap between two scores whose order decides the result; below it, float noise between the cached (HF)
# and uncached (reference) computations could legitimately swap them, so such a case is a bad test case, not a bug.
MIN_MARGIN = 1e-4


# ----------------------------------------------------------------------------------------------------- models
@functools.lru_cache(maxsize=None)
def make_model(seed: int, conditioning: str = "every_step", layers: int = 1, eos_bias: float = 0.0,
               scale: float = 0.5, variant: str = "intermediate") -> CamJointModel:
    """A small random CamJoint model (eval mode). Cached: tests must not modify it (monkeypatch is undone)."""
    torch.manual_seed(seed)
    config = CamJointConfig(encoder_name="resnet18", variant=variant, vocab_size=VOCAB, num_labels=5,
                            intermediate_size=EMBED_DIM, hidden_size=24, word_embedding_size=16,
                            max_caption_length=MAX_LEN, conditioning=conditioning, num_lstm_layers=layers)
    model = CamJointModel(config).eval()
    generator = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for parameter in model.captioner.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
        model.captioner.lm_head.bias[EOS] += eos_bias
    return model


def embeds(seed: int, batch: int, dim: int = EMBED_DIM) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------- references
@torch.no_grad()
def next_token_log_probs(model: CamJointModel, z: torch.Tensor, sequences: list[list[int]]):
    """For equal-length token lists (each starting with bos) of ONE image z (D,): the teacher-forced log-probability
    of each list and the log-probabilities of every next token, from a full forward pass without cache."""
    ids = torch.tensor(sequences, dtype=torch.long)
    logits = model.captioner(input_ids=ids, image_embeds=z.expand(len(sequences), -1)).logits
    log_probs = logits.double().log_softmax(-1)  # (beams, T, V)
    log_probs[:, -1, NEVER] = float("-inf")  # the saved generation config's suppress_tokens (pad, bos)
    prefix = log_probs[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2).sum(1)
    return prefix, log_probs[:, -1]


def teacher_forced_log_prob(model: CamJointModel, z: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens[1:] | bos, image): sum of the log-softmax of each token after bos (eos included)."""
    ids = torch.tensor([tokens], dtype=torch.long)
    with torch.no_grad():
        logits = model.captioner(input_ids=ids, image_embeds=z[None]).logits[0]
    log_probs = logits.double().log_softmax(-1)
    return float(sum(log_probs[t - 1, tokens[t]] for t in range(1, len(tokens))))


def strip(row: torch.Tensor, fill: tuple[int, ...] = (PAD, EOS)) -> list[int]:
    """A generated row as a token list up to its first eos (inclusive); what follows must be filler."""
    tokens = row.tolist()
    if EOS in tokens[1:]:
        end = tokens.index(EOS, 1) + 1
        assert all(t in fill for t in tokens[end:]), f"tokens after eos are not filler: {tokens}"
        return tokens[:end]
    return tokens


@torch.no_grad()
def hand_greedy(model: CamJointModel, z: torch.Tensor, max_length: int = MAX_LEN, banned: int | None = None,
                sample: bool = False, prompt: torch.Tensor | None = None) -> torch.Tensor:
    """Batched greedy (or multinomial sampling) that re-runs the whole prefix at every step: no cache at all."""
    tokens = torch.full((z.shape[0], 1), BOS, dtype=torch.long) if prompt is None else prompt
    finished = torch.zeros(z.shape[0], dtype=torch.bool)
    for _ in range(max_length - tokens.shape[1]):
        logits = model.captioner(input_ids=tokens, image_embeds=z).logits[:, -1].float()
        logits[:, NEVER] = float("-inf")  # pad and bos are never generated (suppress_tokens)
        if banned is not None:
            logits[:, banned] = float("-inf")
        nxt = torch.multinomial(logits.softmax(-1), 1)[:, 0] if sample else logits.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, PAD), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        finished |= nxt == EOS
        if bool(finished.all()):
            break
    return tokens


def hand_beam_search(model: CamJointModel, z: torch.Tensor, num_beams: int, max_length: int = MAX_LEN,
                     length_penalty: float = 1.0, early_stopping: bool | str = False, trace: dict | None = None):
    """Beam search for ONE image z (D,), written from the semantics of Transformers' `_beam_search`:

    * each step ranks all (beam, token) candidates by their teacher-forced log-probability and keeps the top
      K = 2 * num_beams (one eos token);
    * a candidate ending in eos, or reaching max_length, is finished; only those ranked in the top num_beams may
      enter the finished list, with score logP / (generated length) ** length_penalty, and only while the list is not
      full with `early_stopping=True` and the early-stop heuristic still allows improvement;
    * the next beams are the best num_beams unfinished candidates among the K;
    * the heuristic (once the finished list is full): best running logP / L ** length_penalty must beat the worst
      finished score, L = generated length (or max_length - 1 for early_stopping="never" with a positive penalty).

    Returns (hypotheses best first as (score, tokens), smallest decision margin met).
    """
    beams_to_keep = 2 * num_beams
    running = [[BOS]]
    finished: list[tuple[float, list[int]]] = []
    improvable = True
    margins = [float("inf")]
    cur_len = 1
    while True:
        prefix, next_lp = next_token_log_probs(model, z, running)
        scores = (prefix[:, None] + next_lp).flatten()  # logP of every candidate running[b] + [v]
        order = scores.argsort(descending=True, stable=True)[: beams_to_keep + 1].tolist()
        vocab = next_lp.shape[1]
        candidates = [(float(scores[i]), running[i // vocab] + [i % vocab]) for i in order]
        for k in (num_beams, beams_to_keep):  # the rank boundaries that matter
            margins.append(candidates[k - 1][0] - candidates[k][0])
        top = candidates[:beams_to_keep]
        hits = [seq[-1] == EOS or len(seq) >= max_length for _, seq in top]
        new_running = [c for c, hit in zip(top, hits) if not hit][:num_beams]
        full = len(finished) == num_beams
        if improvable and not (full and early_stopping is True):
            added = [(score / (cur_len ** length_penalty), seq)
                     for (score, seq), hit in zip(top[:num_beams], hits[:num_beams]) if hit]
            if added:
                finished = sorted(finished + added, key=lambda c: -c[0])
                if len(finished) > num_beams:
                    margins.append(finished[num_beams - 1][0] - finished[num_beams][0])
                finished = finished[:num_beams]
        cur_len += 1
        if len(finished) == num_beams and new_running:
            hypothetical = (max_length - 1 if early_stopping == "never" and length_penalty > 0 else cur_len - 1)
            best = new_running[0][0] / (hypothetical ** length_penalty)
            margins.append(abs(best - finished[-1][0]))
            improvable = improvable and best > finished[-1][0]
        if not improvable or (len(finished) == num_beams and early_stopping is True) or all(hits):
            if trace is not None:
                trace["steps"] = cur_len - 1
                trace["stop"] = "max_length" if all(hits) else "heuristic" if not improvable else "early_stopping"
                trace["lengths"] = sorted({len(seq) for _, seq in finished})
            return finished, min(margins)
        running = [seq for _, seq in new_running]


def check_beams_against_reference(model, z, num_beams, num_return=1, **gen_kwargs) -> tuple[bool, float]:
    """Run HF beam search and the reference; return (identical?, smallest reference decision margin)."""
    out = model.generate(image_embeds=z, num_beams=num_beams, num_return_sequences=num_return, do_sample=False,
                         return_dict_in_generate=True, output_scores=True, **gen_kwargs)
    assert out.sequences.shape[0] == z.shape[0] * num_return
    same, margin = True, float("inf")
    for i in range(z.shape[0]):
        hyps, m = hand_beam_search(model, z[i], num_beams, max_length=gen_kwargs.get("max_length", MAX_LEN),
                                   length_penalty=gen_kwargs.get("length_penalty", 1.0),
                                   early_stopping=gen_kwargs.get("early_stopping", False))
        margin = min(margin, m)
        rows = out.sequences[i * num_return:(i + 1) * num_return]
        scores = out.sequences_scores[i * num_return:(i + 1) * num_return]
        for r in range(num_return):
            ref_score, ref_tokens = hyps[r]
            same &= strip(rows[r]) == ref_tokens and abs(float(scores[r]) - ref_score) < 1e-4
    return same, margin


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny matmuls: one intra-op thread is faster (and timing-independent on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CONDITIONINGS = [(c, n) for c in ("every_step", "init_state", "first_step") for n in (1, 2)]
# (seed, conditioning, layers, eos_bias): chosen so that, between them, beams finish at many lengths and beam search
# stops at max_length, through the early-stop heuristic and through early_stopping=True
# (test_reference_cases_exercise_finished_beam_logic checks it).
BEAM_MODELS = [(0, "every_step", 1, 2.0), (1, "init_state", 2, 1.5), (1, "every_step", 2, 1.0),
               (0, "first_step", 1, 2.0)]
BEAM_SETTINGS = {"lp0_early": dict(length_penalty=0.0, early_stopping=True),
                 "lp0": dict(length_penalty=0.0),
                 "default": dict(),
                 "never": dict(early_stopping="never")}


def beam_model(seed, conditioning, layers, eos_bias):
    return make_model(seed, conditioning, layers, eos_bias=eos_bias, scale=0.8)


# ------------------------------------------------------------------------------------------------------- greedy
@pytest.mark.parametrize("conditioning,layers", CONDITIONINGS)
def test_greedy_generate_equals_greedy_captions_and_uncached_loop(conditioning, layers):
    model = make_model(1, conditioning, layers, eos_bias=1.5, scale=0.8)
    z = embeds(1, 8)
    generated = model.generate(image_embeds=z, do_sample=False, num_beams=1)
    reference = hand_greedy(model, z)
    lengths = [len(strip(row, fill=(PAD,))) for row in reference]
    assert min(lengths) < MAX_LEN and max(lengths) == MAX_LEN, f"test model should end some captions early: {lengths}"
    torch.testing.assert_close(generated, reference, rtol=0, atol=0)
    torch.testing.assert_close(model.greedy_captions(z), reference, rtol=0, atol=0)
    # generation_config.max_length comes from max_caption_length; a shorter max_length is honoured the same way
    torch.testing.assert_close(model.generate(image_embeds=z, max_length=5), hand_greedy(model, z, 5), rtol=0, atol=0)
    torch.testing.assert_close(model.greedy_captions(z, max_length=5), hand_greedy(model, z, 5), rtol=0, atol=0)


def test_generate_from_pixels_and_feature_maps_encodes_once_like_image_embeds(monkeypatch):
    model = make_model(1, "every_step", 1, eos_bias=1.5, scale=0.8)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = model.get_feature_maps(pixels)
        z = model.get_image_embeds(pixels)
    expected = model.generate(image_embeds=z, num_beams=2)
    calls = []
    encode = model.encoder.forward_features
    monkeypatch.setattr(model.encoder, "forward_features", lambda x: calls.append(x.shape[0]) or encode(x))
    from_pixels = model.generate(pixel_values=pixels, num_beams=2)
    assert calls == [3], f"the encoder should run once on the 3 images, before beam expansion: {calls}"
    torch.testing.assert_close(from_pixels, expected, rtol=0, atol=0)
    torch.testing.assert_close(model.generate(feature_maps=maps, num_beams=2), expected, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("setting", list(BEAM_SETTINGS))
@pytest.mark.parametrize("spec", BEAM_MODELS, ids=lambda s: f"{s[1]}-L{s[2]}-seed{s[0]}-eos{s[3]}")
def test_beam_search_equals_hand_written_beam_search(spec, setting):
    model, z = beam_model(*spec), embeds(spec[0], 3)
    for num_beams in (2, 3, 4):
        same, margin = check_beams_against_reference(model, z, num_beams, **BEAM_SETTINGS[setting])
        assert margin > MIN_MARGIN, f"near-tie ({margin:.2e}) in the reference: pick another test model"
        assert same, f"beam search (num_beams={num_beams}, {setting}) differs from the hand-written beam search"


def test_reference_cases_exercise_finished_beam_logic():
    """The beam comparison is only as good as its cases: they must finish beams early, at several lengths, and stop
    through every route (max_length, the early-stop heuristic, early_stopping=True)."""
    stops, lengths = set(), set()
    for spec in BEAM_MODELS:
        model, z = beam_model(*spec), embeds(spec[0], 3)
        for kwargs in BEAM_SETTINGS.values():
            for i in range(z.shape[0]):
                trace = {}
                hand_beam_search(model, z[i], 3, length_penalty=kwargs.get("length_penalty", 1.0),
                                 early_stopping=kwargs.get("early_stopping", False), trace=trace)
                stops.add(trace["stop"])
                lengths.update(trace["lengths"])
    assert stops == {"max_length", "heuristic", "early_stopping"}
    assert len([n for n in lengths if n < MAX_LEN]) >= 5, lengths


@pytest.mark.parametrize("spec", BEAM_MODELS[:2], ids=lambda s: f"{s[1]}-L{s[2]}")
def test_num_beams_1_is_greedy(spec):
    model, z = beam_model(*spec), embeds(spec[0], 4)
    out = model.generate(image_embeds=z, num_beams=1, do_sample=False, length_penalty=0.0)
    torch.testing.assert_close(out, hand_greedy(model, z), rtol=0, atol=0)


@pytest.mark.parametrize("num_beams", [2, 3, 4])
def test_sequences_scores_are_teacher_forced_log_probs(num_beams):
    for spec in BEAM_MODELS:
        model, z = beam_model(*spec), embeds(spec[0], 3)
        out = model.generate(image_embeds=z, num_beams=num_beams, num_return_sequences=num_beams,
                             length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
        assert out.sequences.shape[0] == 3 * num_beams and out.sequences_scores.shape == (3 * num_beams,)
        for index, (row, score) in enumerate(zip(out.sequences, out.sequences_scores)):
            image = z[index // num_beams]  # num_return_sequences rows per image, in image order
            expected = teacher_forced_log_prob(model, image, strip(row))
            assert abs(float(score) - expected) < 1e-4, (strip(row), float(score), expected)
        # beams come back best first
        scores = out.sequences_scores.view(3, num_beams)
        assert bool((scores[:, :-1] >= scores[:, 1:]).all())


def test_broken_reorder_is_caught(monkeypatch):
    """Proof that the beam comparison has teeth: without the cache reorder, beams silently continue other beams'
    sentences, and the comparison with the hand-written search must notice for at least one case."""
    cases = [(spec, setting, num_beams) for spec in BEAM_MODELS for setting in ("lp0_early", "default")
             for num_beams in (2, 3)]
    for spec in BEAM_MODELS:
        monkeypatch.setattr(beam_model(*spec).captioner, "_reorder_cache", lambda cache, beam_idx: cache)
    differing = [case for case in cases
                 if not check_beams_against_reference(beam_model(*case[0]), embeds(case[0][0], 3), case[2],
                                                      **BEAM_SETTINGS[case[1]])[0]]
    assert differing, "beam search without cache reorder still matched the reference: the test is toothless"
    assert len(differing) >= len(cases) // 2, differing


def test_broken_reorder_is_restored():
    """monkeypatch in the test above is undone: the cached models beam-search correctly again."""
    spec = BEAM_MODELS[0]
    assert check_beams_against_reference(beam_model(*spec), embeds(spec[0], 3), 3)[0]


# ------------------------------------------------------------------------------------------- generation options
def test_num_return_sequences():
    spec = BEAM_MODELS[0]
    model, z = beam_model(*spec), embeds(spec[0], 3)
    same, margin = check_beams_against_reference(model, z, 4, num_return=3, length_penalty=0.0)
    assert margin > MIN_MARGIN and same
    out = model.generate(image_embeds=z, num_beams=4, num_return_sequences=3)
    assert out.shape[0] == 9
    assert len({tuple(strip(row)) for row in out[:3]}) == 3  # distinct hypotheses of image 0
    # sampling: num_return_sequences rows per image, each image's rows from ITS image (top_k=1 makes sampling greedy)
    sampled = model.generate(image_embeds=z, do_sample=True, top_k=1, num_return_sequences=3)
    torch.testing.assert_close(sampled, hand_greedy(model, z).repeat_interleave(3, 0), rtol=0, atol=0)
    with pytest.raises(ValueError):
        model.generate(image_embeds=z, num_beams=2, num_return_sequences=3)


def test_sampling_with_a_fixed_seed_reproduces():
    model, z = make_model(1, "every_step", 2, eos_bias=1.5, scale=0.8), embeds(1, 6)
    torch.manual_seed(123)
    first = model.generate(image_embeds=z, do_sample=True)
    torch.manual_seed(123)
    second = model.generate(image_embeds=z, do_sample=True)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.manual_seed(123)
    reference = hand_greedy(model, z, sample=True)  # same draws: multinomial over softmax(logits), all rows
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    torch.manual_seed(124)
    assert not torch.equal(model.generate(image_embeds=z, do_sample=True), first)
    assert not torch.equal(first, hand_greedy(model, z))


class BanToken(LogitsProcessor):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token] = float("-inf")
        return scores


class StopAtLength(StoppingCriteria):
    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


def test_logits_processor_bans_a_token():
    model, z = make_model(1, "every_step", 1, eos_bias=1.5, scale=0.8), embeds(1, 8)
    plain = model.generate(image_embeds=z)
    banned = int(torch.mode(plain[:, 1:].flatten()).values)  # the most frequent generated token
    assert banned != EOS
    processors = LogitsProcessorList([BanToken(banned)])
    out = model.generate(image_embeds=z, logits_processor=processors)
    assert not bool((out[:, 1:] == banned).any())
    torch.testing.assert_close(out, hand_greedy(model, z, banned=banned), rtol=0, atol=0)
    beams = model.generate(image_embeds=z, num_beams=3, num_return_sequences=3, logits_processor=processors)
    assert not bool((beams[:, 1:] == banned).any())


def test_stopping_criteria_stops_early():
    model, z = make_model(1, "every_step", 1, eos_bias=1.5, scale=0.8), embeds(1, 8)
    full = hand_greedy(model, z)
    out = model.generate(image_embeds=z, stopping_criteria=StoppingCriteriaList([StopAtLength(5)]))
    assert out.shape == (8, 5)
    torch.testing.assert_close(out, full[:, :5], rtol=0, atol=0)
    beams = model.generate(image_embeds=z, num_beams=2, stopping_criteria=StoppingCriteriaList([StopAtLength(4)]))
    assert beams.shape[1] <= 4


def test_generation_config_object_is_honoured():
    spec = BEAM_MODELS[0]
    model, z = beam_model(*spec), embeds(spec[0], 3)
    before = model.generation_config.to_dict()
    config = GenerationConfig(num_beams=3, max_new_tokens=5, length_penalty=0.0, early_stopping=True,
                              num_return_sequences=2, return_dict_in_generate=True, output_scores=True,
                              bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    out = model.generate(image_embeds=z, generation_config=config)
    assert out.sequences.shape[0] == 6 and out.sequences.shape[1] <= 6
    for i in range(3):
        hyps, margin = hand_beam_search(model, z[i], 3, max_length=6, length_penalty=0.0, early_stopping=True)
        assert margin > MIN_MARGIN
        for r in range(2):
            assert strip(out.sequences[2 * i + r]) == hyps[r][1]
            assert abs(float(out.sequences_scores[2 * i + r]) - hyps[r][0]) < 1e-4
    greedy = model.generate(image_embeds=z, generation_config=GenerationConfig(max_length=4, do_sample=False))
    torch.testing.assert_close(greedy, hand_greedy(model, z, 4), rtol=0, atol=0)
    assert model.generation_config.to_dict() == before  # the model's own defaults are untouched


def test_semantic_variant_defaults_to_beam_3():
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet18", variant="semantic", num_concepts=EMBED_DIM, vocab_size=VOCAB,
                            num_labels=5, hidden_size=24, word_embedding_size=16, max_caption_length=MAX_LEN)
    model = CamJointModel(config).eval()
    with torch.no_grad():
        for parameter in model.captioner.parameters():
            parameter.normal_(0, 0.8)
    assert model.generation_config.num_beams == 3
    z = torch.rand(3, EMBED_DIM, generator=torch.Generator().manual_seed(0))  # concept probabilities
    torch.testing.assert_close(model.generate(image_embeds=z), model.generate(image_embeds=z, num_beams=3),
                               rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------ decoding
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima",
         "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
         "xray", "yankee", "zulu"]


def test_batch_decode_gives_clean_strings():
    tokenizer = build_caption_tokenizer([" ".join(WORDS), "Alpha, bravo!"])
    processor = CamJointProcessor(CamJointImageProcessor(), tokenizer)
    assert len(tokenizer) == VOCAB
    vocab = {index: word for word, index in tokenizer.get_vocab().items()}
    model = beam_model(*BEAM_MODELS[0])
    z = embeds(0, 4)
    outputs = [model.generate(image_embeds=z),  # greedy: pad after eos
               model.generate(image_embeds=z, num_beams=3, num_return_sequences=2),  # beams: filler after eos
               torch.tensor([[BOS, 5, 6, EOS, PAD, PAD], [BOS, 7, EOS, EOS, EOS, EOS], [BOS, 8, 9, 10, 11, 12]])]
    assert any(EOS in row[1:].tolist() and row[-1] in (PAD, EOS) for row in outputs[0])
    specials = {PAD, BOS, EOS, UNK}
    for ids in outputs:
        texts = processor.batch_decode(ids, skip_special_tokens=True)
        assert len(texts) == ids.shape[0]
        for row, text in zip(ids.tolist(), texts):
            assert text == " ".join(vocab[t] for t in row if t not in specials), (row, text)
            assert not any(tag in text for tag in ("<bos>", "<eos>", "<pad>", "<unk>", "  "))
            assert text == text.strip()
    assert processor.batch_decode(outputs[2], skip_special_tokens=True)[0] == " ".join([vocab[5], vocab[6]])


def test_generate_continues_a_prompt():
    model, z = make_model(1, "init_state", 2, eos_bias=0.0, scale=0.8), embeds(1, 3)
    prompt = torch.tensor([[BOS, 7, 8, 9]]).repeat(3, 1)
    out = model.generate(image_embeds=z, input_ids=prompt)
    torch.testing.assert_close(out, hand_greedy(model, z, prompt=prompt), rtol=0, atol=0)
    assert bool((model.generate(image_embeds=z, input_ids=prompt, num_beams=3)[:, :4] == prompt).all())


@pytest.mark.parametrize("conditioning", ["every_step", "init_state", "first_step"])
def test_batched_prompts_of_different_lengths(conditioning):
    """processor(text=[...]) left-pads prompts of different lengths; each row must caption as if it were alone."""
    tokenizer = build_caption_tokenizer([" ".join(WORDS)])
    processor = CamJointProcessor(CamJointImageProcessor(), tokenizer)
    prompts = processor(text=["alpha bravo charlie", ""])["input_ids"]
    assert prompts[1].tolist() == [PAD, PAD, PAD, BOS]
    model, z = make_model(1, conditioning, 1, eos_bias=0.0, scale=0.8), embeds(1, 2)
    both = model.generate(image_embeds=z, input_ids=prompts, attention_mask=(prompts != PAD).long())
    for i, length in ((0, 4), (1, 1)):
        alone = model.generate(image_embeds=z[i:i + 1], input_ids=prompts[i:i + 1, -length:],
                               max_length=MAX_LEN - (4 - length))
        assert strip(both[i, 4 - length:]) == strip(alone[0]), (both[i].tolist(), alone[0].tolist())


def test_use_cache_false_equals_cached_generation_even_when_pad_is_generated():
    """use_cache=False re-runs the whole sequence at every step; it must give what the cached LSTM state gives. This
    model emits the pad token as a word in mid-caption (row 5): only LEFT padding of a prompt may be skipped, a
    generated pad must be fed to the LSTM like any other token."""
    model, z = make_model(1, "every_step", 1, eos_bias=1.5, scale=0.8), embeds(1, 8)
    allow_pad = {"suppress_tokens": []}  # the saved config suppresses pad; a user may lift it
    cached = model.generate(image_embeds=z, **allow_pad)
    assert any(PAD in strip(row, fill=(PAD,))[1:] for row in cached), "test model should generate a pad mid-caption"
    torch.testing.assert_close(model.generate(image_embeds=z, use_cache=False, **allow_pad), cached, rtol=0, atol=0)
    for num_beams in (2, 3):
        torch.testing.assert_close(model.generate(image_embeds=z, num_beams=num_beams, use_cache=False, **allow_pad),
                                   model.generate(image_embeds=z, num_beams=num_beams, **allow_pad), rtol=0, atol=0)


def test_pad_and_bos_are_never_generated_even_when_their_logits_are_highest(tmp_path):
    """The saved generation config suppresses pad and bos (and so does the model's own decode): a caption cannot
    hide a pad that decoding would drop. Checked on a model whose pad and bos logits are forced far above the rest,
    after a save / load round trip, for greedy, beams and sampling."""
    import copy

    model = copy.deepcopy(make_model(0))
    with torch.no_grad():
        model.captioner.lm_head.bias[PAD] += 100.0
        model.captioner.lm_head.bias[BOS] += 90.0
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path).eval()
    assert {PAD, BOS} <= set(loaded.generation_config.suppress_tokens)
    z = embeds(0, 4)
    for options in ({}, {"num_beams": 3}, {"do_sample": True}):
        ids = loaded.generate(image_embeds=z, **options)
        for row in ids.tolist():
            words = strip(torch.tensor(row))[1:]
            assert PAD not in words and BOS not in words, (options, row)
    greedy = loaded.greedy_captions(z)
    assert not bool(((greedy[:, 1:] == PAD) & (greedy[:, 1:].roll(-1, 1) != PAD)).any())


def test_max_new_tokens_on_a_saved_checkpoint_gives_no_warning(tmp_path, caplog):
    """The saved generation config sets max_length; asking for max_new_tokens must not warn that both are set."""
    make_model(0).save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path).eval()
    z = embeds(0, 2)
    caplog.set_level("WARNING")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = loaded.generate(image_embeds=z, max_new_tokens=4)
        beams = loaded.generate(image_embeds=z, max_new_tokens=4, num_beams=2)
    assert ids.shape[1] <= 5 and beams.shape[1] <= 5  # bos + at most 4 new tokens
    assert not [r for r in caplog.records if "max_length" in r.getMessage() or "deprecated" in r.getMessage()]
    assert loaded.generate(image_embeds=z).shape[1] <= MAX_LEN  # the saved max_length still holds by default
