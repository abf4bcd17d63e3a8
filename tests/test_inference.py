"""`cam_joint.inference`: the caption and explain commands, the explain figure, and the training run's CAM pictures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from cam_joint import (CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor,
                       build_caption_tokenizer)
from cam_joint.cli import main as cli_main
from cam_joint.data.synthetic import make_synthetic_dataset
from cam_joint.inference import explain_figure, load_image, predict, resolve_label, save_cam_pictures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor, test split, saved model dir, two image files)."""
    ds = make_synthetic_dataset(num_classes=4, train_per_class=2, validation_per_class=0, test_per_class=1,
                                image_size=64)
    tokenizer = build_caption_tokenizer(c for caps in ds["train"]["captions"] for c in caps)
    names = ds["test"].features["label"].names
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet10t", vocab_size=len(tokenizer), num_labels=4,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                            intermediate_size=32, hidden_size=32, word_embedding_size=16, max_caption_length=12)
    model = CamJointModel(config).eval()
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(
        {**model.encoder_data_config(), "input_size": (3, 64, 64), "crop_pct": 1.0}), tokenizer)
    root = tmp_path_factory.mktemp("inference")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    images = []
    for i in (0, 3):
        path = root / f"bird{i}.png"
        ds["test"][i]["image"].save(path)
        images.append(path)
    return model, processor, ds["test"], root / "model", images


def test_caption_cli_prints_each_caption_and_the_top_classes(tiny, capsys):
    model, processor, _, model_dir, images = tiny
    assert cli_main(["caption", "--model", str(model_dir), *map(str, images)]) == 0
    out = capsys.readouterr().out
    blocks = out.split(str(images[1]))
    assert len(blocks) == 2 and str(images[0]) in blocks[0]
    names = set(model.config.id2label.values())
    for block in blocks:
        assert "caption:" in block and "top-4 classes:" in block  # 4 classes: the top 5 is all of them
        rows = re.findall(r"^\s+(\d)\. (\S+)\s+([01]\.\d{4})  \(id (\d)\)$", block, flags=re.M)
        assert [int(r[0]) for r in rows] == [1, 2, 3, 4] and {r[1] for r in rows} == names
        probs = [float(r[2]) for r in rows]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)
    # The printed caption is the model's own (greedy) caption.
    result = predict(model, processor, [load_image(images[0])])[0]
    assert re.search(rf"caption: {re.escape(result['caption'])}(  \[stopped at the maximum length.*\])?\n", blocks[0])
    assert [c[1] for c in result["top_classes"]] == re.findall(r"^\s+\d\. (\S+)", blocks[0], flags=re.M)


def test_explain_cli_writes_a_three_panel_png(tiny, tmp_path, capsys):
    _, _, _, model_dir, images = tiny
    output = tmp_path / "figs" / "explain.png"
    assert cli_main(["explain", "--model", str(model_dir), str(images[0]), "--output", str(output),
                     "--dpi", "100"]) == 0
    assert str(output) in capsys.readouterr().out
    with Image.open(output) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert 900 <= width <= 1500 and 350 <= height <= 600  # three panels side by side (+ colour bar)
    assert pixels.std() > 20  # not blank


def test_explain_figure_panels_follow_the_heads_and_the_label(tiny):
    model, processor, test, _, _ = tiny
    image = test[0]["image"]
    figure = explain_figure(model, processor, image, label=2, true_label=int(test[0]["label"]))
    panels = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    titles = [axis.get_title() for axis in panels]
    assert len(panels) == 3
    assert model.config.id2label[int(test[0]["label"])] in titles[0]
    assert "Classifier CAM, class:" in titles[1] and model.config.id2label[2] in titles[1]
    assert titles[2].startswith("Captioner CAM:")
    # The shown image is the preprocessed one, un-normalised back to [0, 1] (here: the 64 x 64 original).
    shown = panels[0].get_images()[0].get_array()
    assert shown.shape == (64, 64, 3)
    assert np.abs(shown * 255 - np.asarray(image, dtype=np.float64)).max() < 2.0
    overlay = panels[1].get_images()[1].get_array()
    assert overlay.shape == (64, 64) and overlay.min() >= 0.0 and overlay.max() <= 1.0

    assert resolve_label(model, model.config.id2label[3].upper().replace("_", " ")) == 3
    with pytest.raises(ValueError, match="unknown class 'no_such_bird'"):
        resolve_label(model, "no_such_bird")
    with pytest.raises(ValueError, match="out of range"):
        resolve_label(model, 7)


def test_save_cam_pictures_writes_pngs(tiny, tmp_path):
    model, processor, test, _, _ = tiny
    paths = save_cam_pictures(model, processor, test, tmp_path / "cams", count=2,
                              generation_kwargs={"max_length": 6})
    assert len(paths) == 2 and all(p.is_file() and p.suffix == ".png" for p in paths)
    assert paths[0].name == "cam_00_synthetic_test_00000.png"  # spread: the first and the last image
    assert paths[1].name == f"cam_01_{test[len(test) - 1]['image_id'].replace('/', '_')}.png"


def test_missing_or_corrupt_images_are_named(tiny, tmp_path, capsys):
    _, _, _, model_dir, images = tiny
    missing = tmp_path / "nope.jpg"
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(missing)
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        load_image(corrupt)
    assert cli_main(["caption", "--model", str(model_dir), str(images[0]), str(missing)]) == 2
    captured = capsys.readouterr()
    assert "nope.jpg" in captured.err and captured.out == ""  # checked before any image is captioned
    assert cli_main(["explain", "--model", str(model_dir), str(corrupt), "--output", str(tmp_path / "x.png")]) == 2
    assert "broken.jpg" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert cli_main(["explain", "--model", str(model_dir), str(images[0]), "--output", str(tmp_path / "x.png"),
                     "--label", "no_such_bird"]) == 2
    assert "unknown class 'no_such_bird'" in capsys.readouterr().err


def _copied_into(folder, images):
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


def test_caption_takes_a_folder_and_skips_bad_files_when_asked(tiny, tmp_path, capsys):
    _, _, _, model_dir, images = tiny
    folder = _copied_into(tmp_path / "photos", images)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, and not an image name")  # ignored: not an image suffix
    assert cli_main(["caption", "--model", str(model_dir), str(folder)]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "--skip-bad" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["caption", "--model", str(model_dir), str(folder), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [str(folder / p.name) for p in images]
    assert out.count("caption:") == 2 and "skipped 1 unreadable file" in err and "broken.jpg" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["caption", "--model", str(model_dir), str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_a_caption_cut_by_the_maximum_length_says_so(tiny, capsys):
    _, _, _, model_dir, images = tiny
    assert cli_main(["caption", "--model", str(model_dir), str(images[0])]) == 0
    caption_line = next(line for line in capsys.readouterr().out.splitlines() if "caption:" in line)
    # An untrained model never emits eos: its caption runs to max_caption_length, and the output says so.
    assert caption_line.endswith("[stopped at the maximum length, 12 tokens, no eos]")


def test_explain_a_folder_writes_one_png_per_image(tiny, tmp_path, capsys):
    _, _, _, model_dir, images = tiny
    folder = _copied_into(tmp_path / "photos", images)
    assert cli_main(["explain", "--model", str(model_dir), str(folder), "--output", str(tmp_path / "cams")]) == 0
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(f"{p.stem}_cam.png" for p in images)


def test_model_folder_errors_are_one_line(tiny, tmp_path, capsys):
    """A missing weights file, or weights that do not fit the config, give one `error:` line and exit code 2."""
    import json
    import shutil

    _, _, _, model_dir, images = tiny
    no_weights = tmp_path / "no_weights"
    shutil.copytree(model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    misfit = tmp_path / "misfit"
    shutil.copytree(model_dir, misfit)
    config = json.loads((misfit / "config.json").read_text())
    config.update(encoder_name="resnet18", encoder_channels=None)
    (misfit / "config.json").write_text(json.dumps(config))
    for folder, expected in ((no_weights, "model.safetensors"), (misfit, "do not fit")):
        assert cli_main(["caption", "--model", str(folder), str(images[0])]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err, err


def test_a_truncated_jpeg_is_named_and_skipped_when_asked(tiny, tmp_path, capsys):
    """A photo cut off mid-download: a valid JPEG header, half its data. Without --skip-bad one `error:` line naming
    it and exit 2; with it, reported and skipped, the other images captioned."""
    _, _, test, model_dir, images = tiny
    folder = _copied_into(tmp_path / "photos", images)
    whole = tmp_path / "whole.jpg"
    test[1]["image"].convert("RGB").resize((256, 256)).save(whole, format="JPEG", quality=95)
    (folder / "cut.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert cli_main(["caption", "--model", str(model_dir), str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cut.jpg" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["caption", "--model", str(model_dir), str(folder), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert out.count("caption:") == len(images) and "cut.jpg" not in out
    assert "skipped 1 unreadable file" in err and "cut.jpg" in err
