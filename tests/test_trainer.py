"""`transformers.Trainer` trains a CamJointModel with `cam_joint.CamJointCollator`: the loss (class + caption + CAM,
computed in `forward`) falls, and `trainer.save_model` writes a folder that loads with trust_remote_code in a fresh
process where cam_joint is not importable."""

from __future__ import annotations

import json
import random

import pytest
import torch
from test_remote_code import run_without_cam_joint

from cam_joint import (CamJointCollator, CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor,
                       build_caption_tokenizer)
from cam_joint.data.synthetic import make_synthetic_split

transformers = pytest.importorskip("transformers")
STEPS = 30


def tiny_model_and_data():
    train = make_synthetic_split("train", 2, num_classes=3, image_size=48, seed=0)
    tokenizer = build_caption_tokenizer([c for row in train["captions"] for c in row])
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet10t", freeze_encoder=False, intermediate_size=16, hidden_size=16,
                            word_embedding_size=8, vocab_size=len(tokenizer), num_labels=3, max_caption_length=32)
    model = CamJointModel(config)
    image_processor = CamJointImageProcessor.from_data_config({**model.encoder_data_config(),
                                                               "input_size": (3, 48, 48)})
    return model, CamJointProcessor(image_processor, tokenizer), train


class LossLog(transformers.TrainerCallback):
    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from transformers import Trainer, TrainingArguments

    root = tmp_path_factory.mktemp("trainer")
    model, processor, train = tiny_model_and_data()
    args = TrainingArguments(output_dir=str(root / "run"), per_device_train_batch_size=len(train), max_steps=STEPS,
                             learning_rate=3e-3, logging_steps=1, report_to="none", use_cpu=True,
                             remove_unused_columns=False, save_strategy="no", seed=0)
    log = LossLog()
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=processor, callbacks=[log],
                      data_collator=CamJointCollator(processor, model.config.max_caption_length))
    trainer.train()
    trainer.save_model(str(root / "saved"))
    return {"root": root, "model": model, "processor": processor, "train": train, "losses": log.losses}


def test_collator_gives_the_model_inputs_with_one_of_each_images_captions(trained):
    processor, train = trained["processor"], trained["train"]
    rows = [train[i] for i in range(3)]
    batch = CamJointCollator(processor, 32, seed=0)(rows)
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels"}
    assert batch["pixel_values"].shape == (3, 3, 48, 48)
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    torch.testing.assert_close(batch["attention_mask"], (batch["input_ids"] != processor.tokenizer.pad_token_id).long())
    rng = random.Random(0)  # the collator's choice: one caption per row, drawn in order
    chosen = [rng.choice(row["captions"]) for row in rows]
    assert processor.batch_decode(batch["input_ids"], skip_special_tokens=True) == [
        processor.batch_decode(processor.encode_captions([c]), skip_special_tokens=True)[0] for c in chosen]


def test_collator_names_a_missing_column(trained):
    with pytest.raises(KeyError, match="'captions'.*remove_unused_columns=False"):
        CamJointCollator(trained["processor"])([{"image": trained["train"][0]["image"], "label": 0}])


def test_trainer_loss_includes_the_cam_loss(trained):
    model, processor, train = trained["model"], trained["processor"], trained["train"]
    model.train()
    out = model(**CamJointCollator(processor, 32)([train[i] for i in range(4)]))
    assert out.cam_loss is not None and out.cam_loss.requires_grad
    expected = out.class_loss + out.caption_loss + model.config.cam_loss_weight * out.cam_loss
    torch.testing.assert_close(out.loss, expected)


def test_trainer_loss_falls(trained):
    """One batch of all 6 images, 30 steps: overfitting it must cut the loss well beyond step-to-step noise."""
    losses = trained["losses"]
    assert len(losses) == STEPS
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses


def test_save_model_loads_with_remote_code_in_a_fresh_process(trained):
    saved = trained["root"] / "saved"
    files = {p.name for p in saved.iterdir()}
    assert {"modeling_cam_joint.py", "cam_core.py", "config.json", "model.safetensors", "tokenizer.json",
            "processor_config.json"} <= files
    # the reference is the saved weights read in this process (another test's train-mode forward moved the trained
    # model's batch-norm statistics since)
    model, processor, train = CamJointModel.from_pretrained(saved).eval(), trained["processor"], trained["train"]
    pixels = processor.image_processor([train[i]["image"] for i in range(2)])["pixel_values"]
    torch.save(pixels, trained["root"] / "pixels.pt")
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    child = r'''
import json, torch
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
with torch.no_grad():
    logits = model(pixel_values=torch.load(sys.argv[2])).logits
print(json.dumps({"module": type(model).__module__, "processor": type(processor).__name__,
                  "logits": logits.tolist()}))
'''
    done = run_without_cam_joint(child, [str(saved), str(trained["root"] / "pixels.pt")], trained["root"])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.") and result["processor"] == "CamJointProcessor"
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=1e-4, atol=1e-5)
