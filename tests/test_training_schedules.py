"""The other papers' training schedules from the CLI: S-CNN-RNN two-stage training, Show-and-Tell (NIC) conditioning
with a fine-tuned encoder, and self-critical sequence training (SCST) for every captioning variant. Each trained
checkpoint loads through `AutoModel.from_pretrained(trust_remote_code=True)` in a process without `cam_joint`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cam_joint
from cam_joint import CamJointConfig, CamJointModel, build_caption_tokenizer
from cam_joint.cli import main as cli_main
from cam_joint.metrics.cider_d import CiderD
from cam_joint.losses_cam_joint import self_critical_loss, token_log_probs
from cam_joint.self_critical import SelfCriticalReward
from cam_joint.training import TrainingObjective

REPO = Path(__file__).resolve().parents[1]
SRC = Path(cam_joint.__file__).resolve().parent
TINY = ["--synthetic-classes", "3", "--synthetic-per-class", "4", "--image-size", "48", "--batch-size", "4",
        "--intermediate-size", "16", "--hidden-size", "16", "--word-embedding-size", "8", "--encoder", "resnet10t",
        "--no-caption-metrics", "--eval-split", "validation", "--max-caption-length", "12"]

CHILD = textwrap.dedent(r'''
    import json, os, sys
    sys.modules["cam_joint"] = None  # `import cam_joint` now raises ImportError
    SRC = os.path.realpath(sys.argv[2])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != SRC]
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 48, 48)
    tokens = model.generate(pixel_values=pixels, max_length=12)
    print(json.dumps({"tokens": tokens.tolist(), "class": type(model).__module__,
                      "num_beams": model.generation_config.num_beams, "variant": model.config.variant,
                      "conditioning": model.config.conditioning}))
''')


def train(output_dir: Path, *extra: str) -> Path:
    assert cli_main(["train", *TINY, "--output-dir", str(output_dir), *extra]) == 0
    return output_dir


def load_in_fresh_process(checkpoint: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(SRC.parent)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=checkpoint)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def same_generation_here(checkpoint: Path) -> list:
    model = CamJointModel.from_pretrained(checkpoint).eval()
    torch.manual_seed(0)
    return model.generate(pixel_values=torch.randn(2, 3, 48, 48), max_length=12).tolist()


# ---------------------------------------------------------------------------------------------------- CLI runs
@pytest.mark.slow
def test_semantic_two_stage_training_from_the_cli_round_trips(tmp_path, caplog):
    caplog.set_level("INFO", logger="cam_joint.train")
    out = train(tmp_path / "semantic", "--config", str(REPO / "hub_configs" / "cub_semantic.json"),
                "--stage1-epochs", "0.5", "--max-steps", "4", "--allow-random-frozen-encoder")
    messages = "\n".join(r.getMessage() for r in caplog.records)
    # 12 images / batch 4 = 3 steps per epoch: stage 1 is round(0.5 * 3) = 2 steps, then joint.
    assert "stage 1 (CNN on concepts, LSTM on ground-truth concepts) for steps 1-2, then joint" in messages
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "semantic" and config["conditioning"] == "init_state"
    # The synthetic captions have fewer than 1000 words: K is clamped to the vocabulary's words.
    assert config["num_concepts"] == config["vocab_size"] - 4 == config["intermediate_size"]
    child = load_in_fresh_process(out)
    assert child["num_beams"] == 3 and child["variant"] == "semantic"
    assert child["tokens"] == same_generation_here(out)


@pytest.mark.slow
def test_nic_config_fine_tunes_the_encoder_and_round_trips(tmp_path):
    out = train(tmp_path / "nic", "--config", str(REPO / "hub_configs" / "flowers_nic.json"), "--max-steps", "2")
    config = json.loads((out / "config.json").read_text())
    assert config["conditioning"] == "first_step" and config["freeze_encoder"] is False
    assert not (tmp_path / "feature-cache").exists()  # a fine-tuned encoder is never cached
    child = load_in_fresh_process(out)
    assert child["conditioning"] == "first_step"
    assert child["tokens"] == same_generation_here(out)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cam", "lrcn", "semantic"])
def test_self_critical_training_from_the_cli(tmp_path, caplog, variant):
    caplog.set_level("INFO", logger="cam_joint.train")
    out = train(tmp_path / variant, "--variant", variant, "--scst-after-epochs", "0.34", "--max-steps", "3",
                "--report-to", "tensorboard")
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "self-critical training from step 2 (CIDEr-D reward, document frequencies of 12 training images)" \
        in messages
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = list((out / "cam-joint").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    rewards = accumulator.Scalars("train/reward")
    assert [event.step for event in rewards] == [2, 3]  # step 1 is cross-entropy, 2-3 self-critical
    assert all(event.value >= 0 for event in rewards)
    if variant == "cam":
        assert [event.step for event in accumulator.Scalars("train/cam_loss")] == [1, 2, 3]
    assert (out / "model.safetensors").exists()


def test_schedule_options_are_checked(tmp_path, capsys):
    for options, message in (
        (["--variant", "cam", "--stage1-epochs", "1"], "--stage1-epochs is the semantic variant's two-stage training"),
        (["--variant", "cnn", "--scst-after-epochs", "0"], "variant='cnn' has none"),
        (["--variant", "semantic", "--stage1-epochs", "1", "--scst-after-epochs", "0.5"], "falls inside stage 1"),
    ):
        assert cli_main(["train", *TINY, *options, "--max-steps", "1", "--output-dir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the model's side
def _semantic_model(**kwargs) -> CamJointModel:
    config = CamJointConfig(encoder_name="resnet10t", freeze_encoder=False, variant="semantic", num_concepts=6,
                            conditioning="init_state", hidden_size=8, word_embedding_size=8, vocab_size=12,
                            num_labels=3, max_caption_length=8, **kwargs)
    return CamJointModel(config).train()


def test_stage_one_trains_cnn_and_lstm_independently():
    """Stage 1: the caption loss reads the ground-truth concepts (not the image) and never reaches the CNN; the
    concept loss trains the CNN and never the LSTM."""
    torch.manual_seed(0)
    model = _semantic_model(use_cam_loss=True)
    objective = TrainingObjective(model.config, stage1_steps=1)
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    concepts = torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]])
    batch = {"pixel_values": torch.randn(2, 3, 64, 64), "input_ids": ids, "labels": torch.tensor([0, 2]),
             "concept_labels": concepts, "image_index": torch.tensor([0, 1])}
    losses, _ = objective.losses(model, model, batch, step=0)
    assert "cam_loss" not in losses  # the captioner does not look at the image in stage 1
    other, _ = objective.losses(model, model, {**batch, "pixel_values": torch.randn(2, 3, 64, 64)}, step=0)
    torch.testing.assert_close(other["caption_loss"], losses["caption_loss"])  # the image does not matter to the LSTM
    cnn = [*model.encoder.parameters(), *model.intermediate.parameters()]
    assert all(g is None for g in torch.autograd.grad(losses["caption_loss"], cnn, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(losses["concept_loss"], list(model.captioner.parameters()),
                                                      allow_unused=True))
    joint, _ = objective.losses(model, model, batch, step=1)  # stage 2: joint, with the CAM loss again
    assert "cam_loss" in joint
    assert any(g is not None and g.abs().sum() > 0
               for g in torch.autograd.grad(joint["caption_loss"], cnn, allow_unused=True))


def test_self_critical_step_raises_the_probability_of_a_better_than_greedy_caption():
    """One SGD step on L_scst with a positive advantage for image 0 and a negative one for image 1 makes image 0's
    sampled caption more likely and image 1's less likely (scored by teacher forcing, independently of sampling)."""
    torch.manual_seed(1)
    model = _semantic_model()
    model.config.dropout = 0.0
    images = torch.randn(2, 3, 32, 32)
    z = model(pixel_values=images).image_embeds
    sampled, log_probs, mask = model.captioner.decode(z, model.config.max_caption_length, sample=True)
    assert log_probs.requires_grad

    def caption_log_prob():
        with torch.no_grad():
            logits = model(pixel_values=images, input_ids=sampled).caption_logits
            teacher_forced, token_mask = token_log_probs(logits, sampled, model.config.pad_token_id)
        return (teacher_forced * token_mask).sum(1)

    before = caption_log_prob()
    # Teacher forcing reproduces the decode's own log-probabilities (same model, same tokens).
    torch.testing.assert_close((log_probs * mask).sum(1).detach(), before)
    loss = self_critical_loss(log_probs, mask, torch.tensor([1.0, -1.0]))
    loss.backward()
    with torch.no_grad():
        for p in model.captioner.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    after = caption_log_prob()
    assert after[0] > before[0] and after[1] < before[1]


def test_reward_is_cider_d_of_sampled_minus_greedy_against_the_images_references():
    captions = [["a red bird", "red bird with a black crown"], [], ["a blue bird", "small blue bird"]]
    tokenizer = build_caption_tokenizer([c for caps in captions for c in caps])
    reward = SelfCriticalReward(tokenizer, captions)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def ids(text):
        return [bos, *tokenizer(text, add_special_tokens=False)["input_ids"], eos]

    sampled = torch.tensor([ids("a red bird"), ids("a red bird"), ids("blue bird") + [pad]])
    greedy = torch.tensor([ids("blue bird") + [pad], ids("a red bird"), ids("a blue bird")])
    advantage, sampled_reward, greedy_reward = reward(sampled, greedy, torch.tensor([0, 1, 2]))
    # The same numbers straight from CIDEr-D over the images with captions (eos is a word of every caption).
    corpus = [[tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for c in caps] for caps in captions
              if caps]
    cider = CiderD(corpus)
    expected_sampled = cider.score([s[1:] for s in (ids("a red bird"), ids("blue bird"))], [0, 1])
    expected_greedy = cider.score([s[1:] for s in (ids("blue bird"), ids("a blue bird"))], [0, 1])
    torch.testing.assert_close(sampled_reward[[0, 2]], torch.tensor(expected_sampled, dtype=torch.float32))
    torch.testing.assert_close(greedy_reward[[0, 2]], torch.tensor(expected_greedy, dtype=torch.float32))
    assert advantage[0] > 0 > advantage[2]  # image 0: the sample matches its references, the greedy one does not
    assert advantage[1] == 0 and sampled_reward[1] == 0  # image 1 has no captions: no reward, no push


def test_concept_loss_is_eq5_summed_over_concepts_and_averaged_over_images():
    torch.manual_seed(2)
    model = _semantic_model().eval()
    images = torch.randn(3, 3, 32, 32)
    concepts = torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]])
    out = model(pixel_values=images, concept_labels=concepts)
    s = out.concept_probs.double()
    eq5 = -(concepts * s.log() + (1 - concepts) * (1 - s).log()).sum(1)  # per image, Liu et al. eq. 5
    torch.testing.assert_close(out.concept_loss.double(), eq5.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"concept_labels must have shape \(batch, num_concepts\) = \(3, 6\)"):
        model(pixel_values=images, concept_labels=concepts[:, :5])


def test_reward_cuts_captions_at_eos_and_counts_a_sampled_pad_as_a_wrong_word():
    captions = [["a red bird", "red bird with a black crown"], ["a blue bird", "small blue bird"]]
    tokenizer = build_caption_tokenizer([c for caps in captions for c in caps])
    reward = SelfCriticalReward(tokenizer, captions)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    words = tokenizer("a red bird", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[bos, *words, eos, pad, pad], [bos, words[0], pad, *words[1:], eos, pad],
                        [bos, *words, words[2], words[2], words[2]]])
    assert reward.caption_tokens(ids) == [[*words, eos], [words[0], pad, *words[1:], eos], [*words, *words[2:] * 3]]
    _, scores, _ = reward(ids, ids, torch.tensor([0, 0, 0]))
    assert scores[0] > scores[1] and scores[0] > scores[2]  # the clean caption beats the pad-split and unended ones


def test_compare_variants_prints_the_table_and_each_rows_command(tmp_path):
    """The comparison script from finished runs (--reuse): one row per variant, mean ± std over seeds, and the
    command of each row with its schedule switches placed at the requested shares of the budget."""
    for variant, seed, top1, cider in (("cnn", 0, 0.8, None), ("cnn", 1, 0.9, None), ("cam+scst", 0, 0.7, 0.75),
                                       ("cam+scst", 1, 0.7, 0.85)):
        run = tmp_path / f"{variant}-seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"top1": top1, "top5": 1.0, "CIDEr": cider}))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_variants.py"), "--variants", "cnn",
                             "cam+scst", "--seeds", "0", "1", "--max-steps", "300", "--output-dir", str(tmp_path),
                             "--reuse"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    cnn = next(line for line in lines if line.startswith("| cnn |")).split(" | ")
    assert cnn[1] == "85.0 ± 7.1" and cnn[9] == "-"  # top-1 mean ± std; no CIDEr for a classifier
    scst = next(line for line in lines if line.startswith("| cam+scst |")).split(" | ")
    assert scst[9] == "80.0 ± 7.1"
    # 300 steps of 125 per epoch: self-critical from 2/3 of the budget = 1.6 epochs.
    assert "- cam+scst: `--variant cam --scst-after-epochs 1.6`" in lines
