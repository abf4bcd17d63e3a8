"""`cam-joint train`: the output folder, resume exactness, 2-process runs, fine-tuning from a checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cam_joint.cli import main as cli_main
from cam_joint.metrics.registry import METRICS

TINY = ["--synthetic-classes", "3", "--synthetic-per-class", "4", "--image-size", "48", "--batch-size", "4",
        "--intermediate-size", "16", "--hidden-size", "16", "--word-embedding-size", "8", "--encoder", "resnet10t",
        "--no-caption-metrics", "--eval-split", "validation"]


def train(output_dir, *extra):
    assert cli_main(["train", *TINY, "--output-dir", str(output_dir), *extra]) == 0
    return output_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tmp_path_factory.mktemp("run") / "out", "--max-steps", "4", "--checkpointing-steps", "2")


def test_train_writes_a_complete_checkpoint(trained):
    files = {p.name for p in trained.iterdir()}
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "processor_config.json", "modeling_cam_joint.py", "cam_core.py", "README.md", "metrics.json",
                 "training_args.json"):
        assert name in files, name
    assert any(name.endswith(".png") for name in files)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert "top-1" in (trained / "README.md").read_text().lower() or "top1" in (trained / "README.md").read_text()
    config = json.loads((trained / "config.json").read_text())
    assert config["variant"] == "cam" and config["auto_map"]["AutoModel"] == "modeling_cam_joint.CamJointModel"
    assert (trained / "checkpoints" / "step_2" / "progress.json").exists()


def test_resumed_run_ends_with_the_same_weights(trained, tmp_path):
    """Killed after step 2 and resumed: the same weights as the uninterrupted 4-step run."""
    resumed = train(tmp_path / "resumed", "--max-steps", "4", "--resume", str(trained / "checkpoints" / "step_2"))
    original, again = load_file(trained / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert original.keys() == again.keys()
    for name in original:
        torch.testing.assert_close(again[name], original[name], rtol=1e-5, atol=1e-6, msg=name)
    fresh = load_file(train(tmp_path / "two_steps", "--max-steps", "2") / "model.safetensors")
    assert any(not torch.allclose(fresh[n], original[n]) for n in original), "steps 3-4 changed nothing"


def test_init_from_reports_kept_and_new_weights(trained, tmp_path, caplog):
    caplog.set_level("INFO", logger="cam_joint.train")
    out = train(tmp_path / "finetuned", "--max-steps", "1", "--init-from", str(trained), "--synthetic-classes", "4",
                "--seed", "3")
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 4
    report = "\n".join(r.getMessage() for r in caplog.records if "init-from" in r.getMessage())
    assert "classifier.weight: kept 3 of 4 classes" in report
    assert "classes: 3 kept, 1 added (" in report and "0 of the checkpoint's dropped" in report


def test_two_process_training_run(tmp_path):
    """torchrun with 2 CPU processes (`accelerate launch --cpu --num_processes 2` would start only one). Step 1 is
    cross-entropy with the CAM loss, step 2 self-critical (sampled captions, rewards computed outside the model):
    DDP must see every trainable parameter in both kinds of step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # 12 images / (batch 4 x 2 processes) = 2 steps per epoch: SCST from 0.5 epoch = from step 2.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cam_joint.cli", "train", *TINY, "--output-dir", str(tmp_path / "ddp"), "--max-steps", "2",
               "--scst-after-epochs", "0.5"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    assert "self-critical training from step 2" in result.stderr
    run = json.loads((tmp_path / "ddp" / "training_args.json").read_text())
    assert run["max_steps"] == 2 and run["num_processes"] == 2  # one job of 2 processes, not 2 lone runs


def test_semantic_concepts_are_the_most_frequent_words_present_in_any_caption():
    from cam_joint import build_caption_tokenizer
    from cam_joint.training import concept_targets

    tokenizer = build_caption_tokenizer(["red bird", "red wing", "red crown, blue wing", "a bird"])
    # frequency order: red (3), bird (2), wing (2), a, blue, crown -> concepts 0..5
    targets = concept_targets(tokenizer, ["One blue bird.", "the red bird"], num_concepts=4)
    words = [tokenizer.convert_ids_to_tokens(4 + k) for k in range(4)]
    assert words == ["red", "bird", "wing", "a"]
    assert targets.tolist() == [1.0, 1.0, 0.0, 0.0]  # "blue" is a word but not among the 4 concepts
    assert concept_targets(tokenizer, [], num_concepts=4).sum() == 0


def test_frozen_encoder_trains_from_the_feature_cache(tmp_path):
    cache = tmp_path / "cache"
    train(tmp_path / "first", "--max-steps", "1", "--freeze-encoder", "--allow-random-frozen-encoder",
          "--cache-dir", str(cache))
    (entry,) = cache.glob("*.f16")
    written = entry.stat().st_mtime_ns
    train(tmp_path / "second", "--max-steps", "1", "--freeze-encoder", "--allow-random-frozen-encoder",
          "--cache-dir", str(cache))
    assert list(cache.glob("*.f16")) == [entry] and entry.stat().st_mtime_ns == written  # reused, not recomputed
    assert json.loads((tmp_path / "second" / "config.json").read_text())["freeze_encoder"] is True


def test_training_args_record_every_resolved_option_and_repeat_the_run(trained, tmp_path):
    recorded = json.loads((trained / "training_args.json").read_text())
    # Options the command line left unset are recorded with the value the run used, not null.
    assert recorded["freeze_encoder"] is False and recorded["conditioning"] == "every_step"
    assert recorded["variant"] == "cam" and recorded["cam_method"] == "gradcam"
    assert recorded["model_config"]["hidden_size"] == 16 and recorded["preprocessing"]["input_size"] == [3, 48, 48]
    assert cli_main(["train", "--args-from", str(trained / "training_args.json"), "--output-dir",
                     str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again == json.loads((trained / "metrics.json").read_text())


def test_a_frozen_encoder_without_pretrained_weights_is_refused(tmp_path, capsys):
    assert cli_main(["train", *TINY, "--freeze-encoder", "--max-steps", "1", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "frozen but has no pretrained weights" in err and "--encoder-weights" in err
    assert not (tmp_path / "model.safetensors").exists()


def test_encoder_weights_from_a_local_timm_checkpoint(tmp_path):
    """--encoder-weights loads a timm checkpoint the test saves (safetensors, .pth, a timm folder) through timm's own
    loader; weights of another architecture or a damaged file give an error naming the file."""
    import timm
    from safetensors.torch import save_file

    from cam_joint import CamJointConfig, CamJointModel

    torch.manual_seed(7)
    source = timm.create_model("resnet10t", pretrained=False)  # with its classifier, as timm checkpoints come
    files = {"safetensors": tmp_path / "w.safetensors", "pth": tmp_path / "w.pth", "folder": tmp_path / "timm"}
    save_file(source.state_dict(), files["safetensors"])
    torch.save(source.state_dict(), files["pth"])
    files["folder"].mkdir()
    save_file(source.state_dict(), files["folder"] / "model.safetensors")
    (files["folder"] / "config.json").write_text(json.dumps({"architecture": "resnet10t"}))
    config = dict(encoder_name="resnet10t", vocab_size=10, num_labels=3, intermediate_size=8, hidden_size=8,
                  word_embedding_size=8)
    for path in files.values():
        model = CamJointModel(CamJointConfig(**config))
        model.load_pretrained_encoder(path)
        expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
        assert model.encoder.state_dict().keys() == expected.keys()
        assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in expected.items()), path
        assert model.config.encoder_weights == str(path)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "other.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file at all")
    for path, words in ((tmp_path / "other.safetensors", "other.safetensors"), (damaged, "damaged.safetensors"),
                        (tmp_path / "missing.pth", "not found")):
        with pytest.raises((ValueError, FileNotFoundError), match=words):
            CamJointModel(CamJointConfig(**config)).load_pretrained_encoder(path)
    out = train(tmp_path / "run", "--encoder-weights", str(files["safetensors"]), "--freeze-encoder",
                "--max-steps", "1", "--cache-dir", str(tmp_path / "cache"))
    assert json.loads((out / "training_args.json").read_text())["encoder_weights"] == str(files["safetensors"])


def test_tensorboard_holds_step_epoch_and_eval_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tmp_path / "tb", "--max-steps", "4", "--report-to", "tensorboard")
    # The tracker's run folder (Accelerate's TensorBoard tracker writes the scalars there; hparams go to a subfolder).
    files = sorted(out.rglob("events.out.tfevents*"), key=lambda f: len(f.parts))
    events = EventAccumulator(str(files[0].parent))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert {"train/class_loss", "train/caption_loss", "train/cam_loss", "lr"} <= set(scalars)
    # 12 training images / batch 4 = 3 steps an epoch: epoch means after steps 3 and 4 (the run's end).
    epoch_loss = events.Scalars("epoch/loss")
    assert [e.step for e in epoch_loss] == [3, 4]
    train_loss = [e.value for e in events.Scalars("train/loss")]
    assert epoch_loss[0].value == pytest.approx(sum(train_loss[:3]) / 3, rel=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert events.Scalars("eval/top1")[-1].value == pytest.approx(metrics["top1"])


def test_as_space_makes_the_output_folder_a_gradio_space(tmp_path):
    import yaml

    out = train(tmp_path / "space", "--max-steps", "1", "--as-space")
    assert (out / "app.py").is_file() and (out / "requirements.txt").is_file()
    front_matter = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front_matter["sdk"] == "gradio" and front_matter["app_file"] == "app.py"


def test_the_shortcut_testbed_trains_and_reports_the_shifted_metrics(tmp_path, capsys):
    out = train(tmp_path / "shortcut", "--synthetic-background-bias", "0.95", "--synthetic-distractors", "2",
                "--synthetic-shifted-per-class", "4", "--max-steps", "30")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top1_shifted", "worst_group_top1", "pointing_game_background_classifier",
                "pointing_game_background_captioner", "pointing_game_background_chance",
                "shifted_pointing_game_background_classifier"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_images_shifted"] == 3 * 4 and metrics["num_groups"] >= 1
    # Every per-head map score the run writes is a registered metric, so the model card's table shows it.
    per_head = [key for key in metrics if key.endswith(("_classifier", "_captioner", "_chance", "_center"))]
    assert "pointing_game_distractor_classifier" in per_head and "shifted_pointing_game_classifier" in per_head
    assert [key for key in per_head if key not in METRICS] == []
    assert sum(row["size"] for row in metrics["groups"][:2]) == 3 * 4  # the overall groups cover test_shifted
    recorded = json.loads((out / "training_args.json").read_text())
    assert recorded["synthetic"]["background_bias"] == 0.95 and recorded["synthetic_background_bias"] == 0.95
    assert "--synthetic-background-bias 0.95" in (out / "README.md").read_text()
    # `cam-joint evaluate --split test_shifted` rebuilds the same split and finds the same top-1.
    capsys.readouterr()
    assert cli_main(["evaluate", "--model", str(out), "--split", "test_shifted", "--no-caption-metrics"]) == 0
    evaluated = json.loads((out / "eval_results_test_shifted.json").read_text())
    assert evaluated["top1"] == metrics["top1_shifted"] and evaluated["num_images"] == 12
    assert evaluated["worst_group_top1"] == metrics["worst_group_top1"]


def test_a_bad_background_bias_is_one_error_line(tmp_path, capsys):
    assert cli_main(["train", *TINY, "--synthetic-background-bias", "1.5", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: background_bias must be a number from 0 to 1" in err and "got 1.5" in err
    assert cli_main(["train", *TINY, "--synthetic-shifted-per-class", "5", "--output-dir", str(tmp_path)]) == 2
    assert "exists only with --synthetic-background-bias" in capsys.readouterr().err


def test_data_workers_keep_a_seeds_batches(tmp_path):
    """The same seed gives the same batches (order, images, captions), epoch after epoch, with 0 and 2 workers,
    through the loader Accelerate prepares as `cam-joint train` does."""
    import argparse

    from cam_joint import training
    from cam_joint.data import load_dataset_by_name

    dataset = load_dataset_by_name("synthetic", num_classes=3, train_per_class=6, validation_per_class=1,
                                   test_per_class=1, image_size=32, seed=0)
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)

    def batches(workers: int) -> list[dict]:
        args = parser.parse_args(["--num-workers", str(workers), "--batch-size", "4", "--output-dir", str(tmp_path)])
        model, processor = training.build_model_and_processor(args, dataset["train"],
                                                              dataset["train"].features["label"].names)
        data = training.CaptionedImages(dataset["train"], processor, 40, args.seed)
        accelerator = training.make_accelerator(args, tmp_path)
        torch.manual_seed(args.seed)
        loader = accelerator.prepare(training.make_train_loader(data, args))
        seen = []
        for epoch in range(2):
            data.epoch = epoch
            loader.set_epoch(epoch)
            seen += [batch for _, batch in zip(range(3), loader)]
        return seen

    single, workers = batches(0), batches(2)
    assert len(single) == len(workers) == 6
    assert not torch.equal(single[0]["image_index"], single[3]["image_index"])  # epochs are reshuffled
    for one, other in zip(single, workers):
        assert one.keys() == other.keys()
        for key in one:
            assert torch.equal(one[key], other[key]), key
