"""`cam_joint.evaluation`: metrics of a tiny random model on tiny synthetic data, and of models "told the answer".

Told the answer: the model's own outputs are replaced by the ground truth (captions = a reference, CAM = the
discriminative-part mask, classifier biased to the true class), so the expected scores are known exactly; the
opposite replacement must then score low. Only one test runs the Java caption metrics (METEOR costs ~10 s of CPU to
start); every other test passes caption_metrics=False.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cam_joint import (CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor,
                       build_caption_tokenizer, caption_words)
from cam_joint.cli import main as cli_main
from cam_joint.data.synthetic import PART_INDEX, make_synthetic_dataset
from cam_joint.evaluation import evaluate_model
from cam_joint.metrics.geometry import box_mask, mask_in_box, preprocessed_box

SYNTHETIC = dict(num_classes=4, train_per_class=2, validation_per_class=2, test_per_class=3, image_size=64, seed=0)
MAX_LEN = 24


def make_model(tokenizer, names, variant="cam", seed=0):
    torch.manual_seed(seed)
    config = CamJointConfig(encoder_name="resnet10t", variant=variant, vocab_size=len(tokenizer),
                            num_labels=len(names), id2label=dict(enumerate(names)),
                            label2id={n: i for i, n in enumerate(names)}, intermediate_size=32, hidden_size=32,
                            word_embedding_size=16, max_caption_length=MAX_LEN)
    return CamJointModel(config).eval()


def make_processor(model, tokenizer, **data_config):
    config = {**model.encoder_data_config(), "input_size": (3, 64, 64), "crop_pct": 1.0, **data_config}
    return CamJointProcessor(CamJointImageProcessor.from_data_config(config), tokenizer)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor, dataset dict, saved model dir with training_args.json)."""
    ds = make_synthetic_dataset(**SYNTHETIC)
    tokenizer = build_caption_tokenizer(c for split in ds.values() for caps in split["captions"] for c in caps)
    names = ds["test"].features["label"].names
    model = make_model(tokenizer, names)
    processor = make_processor(model, tokenizer)
    model_dir = tmp_path_factory.mktemp("model")
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (model_dir / "training_args.json").write_text(json.dumps(
        {"dataset": "synthetic", "data_dir": None, "protocol": "official", "synthetic": SYNTHETIC}))
    return model, processor, ds, model_dir


def short_reference(captions):
    """A reference the model can emit within MAX_LEN tokens (bos + words + eos), at least 4 words for BLEU-4.

    Without an apostrophe: the caption tokenizer turns "bird's" into "bird s", the PTB tokenizer of the COCO metrics
    into "bird 's", so a model cannot reproduce such a reference token for token."""
    return next(c for c in captions if 4 <= len(caption_words(c)) <= MAX_LEN - 2 and "'" not in c)


def in_batches(rows, batch_size):
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def with_first_image_unreferenced(test):
    """The split with image 0's references removed, and one short reference per image (a stand-in for image 0)."""
    captions = list(test["captions"])
    captions[0] = []
    test = test.remove_columns("captions").add_column("captions", captions, feature=test.features["captions"])
    return test, [short_reference(c) if c else "a bird with a red wing" for c in captions]


def encoded_batches(processor, captions, batch_size):
    """What `generate` returns for these captions, batch by batch: bos + words + eos, padded."""
    return [processor.encode_captions(chunk) for chunk in in_batches(captions, batch_size)]


class Replay:
    """Stands in for a model method: returns the prepared outputs of successive batches, in order."""

    def __init__(self, outputs):
        self.outputs, self.calls = list(outputs), 0

    def __call__(self, *args, **kwargs):
        out = self.outputs[self.calls]
        self.calls += 1
        return out


# ----------------------------------------------------------------------------------------------- plain run
def test_metrics_of_random_model_have_the_right_keys_and_ranges(tiny):
    model, processor, ds, _ = tiny
    metrics = evaluate_model(model, processor, ds["test"], batch_size=5, caption_metrics=False, progress=False)
    localisation = ("pointing_game", "energy_pointing", "pxap", "max_box_acc_v2", "max_box_acc_iou30",
                    "max_box_acc_iou50", "max_box_acc_iou70")
    expected = ["num_images", "top1", "top5", "cam_agreement",
                *(f"{m}_{s}" for m in localisation for s in ("classifier", "captioner", "chance", "center")),
                "mean_caption_words", "cam_map_size", "num_pointing_game"]
    assert list(metrics) == expected
    for key in expected[4:-3]:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["cam_map_size"] == [2, 2]  # resnet10t (stride 32) at 64 px
    assert metrics["num_images"] == 12
    assert metrics["top5"] == 1.0  # 4 classes: every label is in the top 5
    assert metrics["top1"] in {i / 12 for i in range(13)}
    for key in ("cam_agreement", "pointing_game_classifier", "pointing_game_captioner"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0 < metrics["num_pointing_game"] <= 12  # discriminative parts visible in (almost) every image
    assert 0.0 <= metrics["mean_caption_words"] <= MAX_LEN - 1  # bos + words (no eos from a random model)
    assert not model.training

    small = evaluate_model(model, processor, ds["test"], max_samples=3, caption_metrics=False, cam_metrics=False,
                           progress=False, return_predictions=True, generation_kwargs={"max_length": 6})
    assert small["num_images"] == 3 and "cam_agreement" not in small and "pointing_game_classifier" not in small
    assert [p["image_id"] for p in small["predictions"]] == list(ds["test"]["image_id"])[:3]
    assert {"label", "predicted_label", "predicted_name", "caption"} <= set(small["predictions"][0])


# ----------------------------------------------------------------------------------------------- told the answer
def test_caption_metrics_of_a_model_told_the_references(tiny, monkeypatch):
    """Captions equal to a reference score BLEU-1..4 = ROUGE-L = 1 and high METEOR / CIDEr; an image without
    references is captioned but not scored. The one test that runs Java (the scorer itself is tested in
    test_metrics_coco.py; what is scored against what is checked without Java below)."""
    model, processor, ds, _ = tiny
    test, told = with_first_image_unreferenced(ds["test"])
    monkeypatch.setattr(model, "generate", Replay(encoded_batches(processor, told, 6)))
    metrics = evaluate_model(model, processor, test, batch_size=6, cam_metrics=False, progress=False)
    assert metrics["num_captioned"] == 11 and metrics["num_images"] == 12
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-6), key
    assert metrics["METEOR"] > 0.9 and metrics["CIDEr"] > 1.0
    assert metrics["mean_caption_words"] == pytest.approx(np.mean([len(caption_words(c)) for c in told]))


def test_captions_are_scored_against_their_own_images_references(tiny, monkeypatch):
    """What reaches the scorer: the decoded generated captions, each with its own image's references, images without
    references left out (no Java: the scorer is replaced by a spy)."""
    import cam_joint.evaluation as evaluation

    model, processor, ds, _ = tiny
    test, told = with_first_image_unreferenced(ds["test"])
    told = [" ".join(reversed(caption_words(c))) for c in told]  # not a reference: never scored against itself
    seen = {}

    def spy(predictions, references, meteor=None):
        seen.update(predictions=predictions, references=references, meteor=meteor)
        return {key: 0.5 for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")}

    monkeypatch.setattr(evaluation, "compute_caption_metrics", spy)
    monkeypatch.setattr(model, "generate", Replay(encoded_batches(processor, told, 5)))
    sentinel = object()
    metrics = evaluate_model(model, processor, test, batch_size=5, cam_metrics=False, meteor=sentinel,
                             progress=False)
    expected = [" ".join(caption_words(c)) for c in told[1:]]
    assert seen["predictions"] == expected
    assert seen["references"] == list(test["captions"])[1:] and seen["meteor"] is sentinel
    assert metrics["num_captioned"] == 11 and metrics["CIDEr"] == 0.5


def test_top1_of_a_classifier_told_the_class(tiny):
    model, processor, ds, _ = tiny
    test = ds["test"]
    original = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    try:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 3.0, 1.0]))  # always class 1
        for label, top1 in ((1, 1.0), (0, 0.0)):
            rows = test.select([i for i, value in enumerate(test["label"]) if value == label])
            metrics = evaluate_model(model, processor, rows, caption_metrics=False, cam_metrics=False,
                                     generation_kwargs={"max_length": 4}, progress=False)
            assert metrics["top1"] == top1 and metrics["num_images"] == 3
    finally:
        model.classifier.load_state_dict(original)


def discriminative_masks(dataset):
    """The synthetic images' discriminative-part masks at the preprocessed (64 x 64, uncropped) resolution."""
    masks = []
    for mask, parts in zip(dataset["part_mask"], dataset["discriminative_parts"]):
        masks.append(np.isin(np.asarray(mask), [PART_INDEX[p] for p in parts]))
    return masks


def test_pointing_game_and_agreement_of_maps_told_the_parts(tiny, monkeypatch):
    """A CAM equal to the discriminative-part mask hits every image; the inverted mask hits none and has zero cosine
    with the mask; two equal maps agree perfectly."""
    model, processor, ds, _ = tiny
    test = ds["test"]
    masks = torch.stack([torch.tensor(m, dtype=torch.float32) for m in discriminative_masks(test)])
    assert all(m.any() for m in masks)
    monkeypatch.setattr(model, "generate",
                        lambda **kw: processor.encode_captions(["a bird"] * kw["feature_maps"].shape[0]))
    # grad_cam is called once for the class and once for the caption per batch, in that order.
    monkeypatch.setattr(model, "grad_cam", Replay([masks, 1.0 - masks]))
    mixed = evaluate_model(model, processor, test, batch_size=12, caption_metrics=False, progress=False)
    assert mixed["num_pointing_game"] == 12
    assert mixed["pointing_game_classifier"] == 1.0 and mixed["pointing_game_captioner"] == 0.0
    assert mixed["cam_agreement"] == pytest.approx(0.0)
    monkeypatch.setattr(model, "grad_cam", Replay([masks[:3], masks[:3]]))
    same = evaluate_model(model, processor, test, max_samples=3, caption_metrics=False, progress=False)
    assert same["cam_agreement"] == pytest.approx(1.0) and same["pointing_game_captioner"] == 1.0


def test_shortcut_testbed_background_pointing_and_worst_group(tiny, monkeypatch):
    """On test_shifted: a classifier CAM equal to the background (part mask 0) peaks on it on every image, a caption
    CAM equal to the bird never; chance is the background's mean area share (maps at full resolution). A classifier
    that always says class 1 has, per group, the share of class 1 in it as top-1."""
    model, processor, _, _ = tiny
    shifted = make_synthetic_dataset(**SYNTHETIC, background_bias=0.5, shifted_per_class=3)["test_shifted"]
    background = torch.stack([torch.tensor(np.asarray(m) == 0, dtype=torch.float32) for m in shifted["part_mask"]])
    monkeypatch.setattr(model, "generate",
                        lambda **kw: processor.encode_captions(["a bird"] * kw["feature_maps"].shape[0]))
    monkeypatch.setattr(model, "grad_cam", Replay([background, 1.0 - background]))
    original = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    try:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 3.0, 1.0]))  # always class 1
        metrics = evaluate_model(model, processor, shifted, batch_size=12, caption_metrics=False, progress=False)
    finally:
        model.classifier.load_state_dict(original)
    assert metrics["pointing_game_background_classifier"] == 1.0
    assert metrics["pointing_game_background_captioner"] == 0.0
    assert metrics["pointing_game_background_chance"] == pytest.approx(float(background.mean()))
    labels, matches = np.array(shifted["label"]), np.array(shifted["background_matches"])
    groups = [labels[matches == value] for value in (True, False) if (matches == value).any()]  # 3 per class: < 50
    assert metrics["worst_group_top1"] == pytest.approx(min(float(np.mean(g == 1)) for g in groups))
    assert metrics["num_groups"] == len(groups)


def test_keypoint_and_bbox_pointing_game_in_the_cropped_frame(tiny, monkeypatch):
    """CUB-style rows (``parts`` keypoints, ``bbox``) with a cropping processor: the keypoint is found where the
    processor's crop puts it; a keypoint cropped away makes its image not evaluable."""
    import datasets

    model, _, ds, _ = tiny
    processor = make_processor(model, tiny[1].tokenizer, crop_pct=0.8)
    config = processor.image_processor.data_config()
    box = preprocessed_box((64, 64), config)  # resize 64 -> 80, crop 64: the central 51.2 pixels
    assert box == pytest.approx((6.4, 6.4, 57.6, 57.6))
    base = ds["test"].select(range(3))
    points = [(20.0, 40.0), (50.0, 12.0), (2.0, 30.0)]  # the third lies in the cropped-away margin
    parts = np.zeros((3, 15, 3), dtype=np.float32)
    parts[:, 0, :2], parts[:, 0, 2] = points, 1.0
    parts[:, 5] = (60.0, 60.0, 0.0)  # an invisible part never counts
    cub = datasets.Dataset.from_dict(
        {"image": base["image"], "label": base["label"], "captions": [[]] * 3,
         "parts": parts.tolist(), "bbox": [[x - 4, y - 4, 8.0, 8.0] for x, y in points]},
        features=datasets.Features({"image": datasets.Image(), "label": base.features["label"],
                                    "captions": datasets.Sequence(datasets.Value("string")),
                                    "parts": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), 3), 15),
                                    "bbox": datasets.Sequence(datasets.Value("float32"), 4)}))

    def peak_at(x, y):  # a 64 x 64 map peaking at the output pixel that shows original point (x, y)
        col, row = (x - box[0]) / (box[2] - box[0]) * 64, (y - box[1]) / (box[3] - box[1]) * 64
        yy, xx = np.mgrid[0:64, 0:64] + 0.5
        return torch.tensor(np.exp(-((xx - col) ** 2 + (yy - row) ** 2) / 8.0), dtype=torch.float32)

    on = torch.stack([peak_at(x, y) for x, y in points])
    off = torch.stack([peak_at(64 - x, 64 - y) for x, y in points])
    monkeypatch.setattr(model, "grad_cam", Replay([on, off]))
    monkeypatch.setattr(model, "generate", lambda **kw: processor.encode_captions(["a bird"] * 3))
    metrics = evaluate_model(model, processor, cub, caption_metrics=False, progress=False)
    assert metrics["num_pointing_game"] == 2 and metrics["num_pointing_game_bbox"] == 2
    assert metrics["pointing_game_classifier"] == 1.0 and metrics["pointing_game_captioner"] == 0.0
    assert metrics["pointing_game_bbox_classifier"] == 1.0 and metrics["pointing_game_bbox_captioner"] == 0.0


# ----------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("crop_mode,input_size,crop_pct,image_size", [
    ("center", (3, 32, 32), 0.875, (70, 45)),
    ("center", (3, 24, 40), 0.9, (50, 66)),
    ("squash", (3, 32, 32), 0.8, (70, 45)),
    ("border", (3, 32, 32), 1.0, (70, 45)),
])
def test_preprocessed_box_matches_the_processor(crop_mode, input_size, crop_pct, image_size):
    """A marked rectangle lands where `preprocessed_box` says, for every timm crop mode (nearest resize, no
    normalisation, so the output pixels are the input's)."""
    width, height = image_size
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4: height // 2 + 5, width // 3: width - 6] = True
    image = Image.fromarray(np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2))
    processor = CamJointImageProcessor(input_size=input_size, interpolation="nearest", mean=(0, 0, 0),
                                       std=(1, 1, 1), crop_pct=crop_pct, crop_mode=crop_mode)
    actual = processor(image)["pixel_values"][0, 0].numpy() > 0.5
    box = preprocessed_box(image.size, processor.data_config())
    predicted = mask_in_box(mask, box, *actual.shape)
    assert (predicted != actual).mean() < 0.03, (box, (predicted != actual).sum())
    xywh = (width // 3, height // 4, width - 6 - width // 3 - 1, height // 2 + 5 - height // 4 - 1)
    assert (box_mask(xywh, box, *actual.shape) != actual).mean() < 0.03


# ----------------------------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant", ["cnn", "lrcn"])
def test_single_head_variants_report_what_they_can(tiny, variant):
    _, processor, ds, _ = tiny
    model = make_model(processor.tokenizer, ds["test"].features["label"].names, variant=variant)
    # cnn: caption_metrics=True must be a no-op (no captioner, so no Java); lrcn would start Java: not here.
    metrics = evaluate_model(model, processor, ds["test"], max_samples=4, caption_metrics=variant == "cnn",
                             progress=False, generation_kwargs={"max_length": 6})
    assert "cam_agreement" not in metrics and metrics["num_images"] == 4
    if variant == "cnn":
        assert {"top1", "top5", "pointing_game_classifier"} <= set(metrics)
        assert not {"Bleu_1", "num_captioned", "pointing_game_captioner", "mean_caption_words"} & set(metrics)
    else:
        assert {"pointing_game_captioner", "mean_caption_words"} <= set(metrics)
        assert not {"top1", "top5", "pointing_game_classifier"} & set(metrics)


def test_mismatched_dataset_and_bad_generation_length_are_refused(tiny):
    model, processor, ds, _ = tiny
    other = make_synthetic_dataset(num_classes=5, train_per_class=0, validation_per_class=0, test_per_class=1,
                                   image_size=64)["test"]
    with pytest.raises(ValueError, match="5 classes but the model has 4"):
        evaluate_model(model, processor, other, caption_metrics=False, progress=False)
    with pytest.raises(ValueError, match="max_caption_length=24"):
        evaluate_model(model, processor, ds["test"], generation_kwargs={"max_new_tokens": 40}, caption_metrics=False,
                       progress=False)


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_rebuilds_the_training_dataset_and_writes_json(tiny, tmp_path, capsys):
    _, _, ds, model_dir = tiny
    output, predictions = tmp_path / "out" / "metrics.json", tmp_path / "preds.jsonl"
    rc = cli_main(["evaluate", "--model", str(model_dir), "--max-samples", "4", "--batch-size", "3",
                   "--no-caption-metrics", "--no-progress", "--output", str(output),
                   "--predictions", str(predictions)])
    assert rc == 0
    record = json.loads(output.read_text())
    assert record["num_images"] == 4 and 0.0 <= record["top1"] <= 1.0 and "cam_agreement" in record
    assert record["eval_info"]["dataset"] == "synthetic" and record["eval_info"]["split"] == "test"
    assert record["eval_info"]["synthetic"] == SYNTHETIC
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [row["image_id"] for row in lines] == list(ds["test"]["image_id"])[:4]
    out = capsys.readouterr().out
    assert "top1" in out and "cam_agreement" in out and str(output) in out

    assert cli_main(["evaluate", "--model", str(model_dir), "--split", "nope", "--no-progress"]) == 2
    assert "split 'nope' not in the dataset" in capsys.readouterr().err
    empty = tmp_path / "no_args"
    empty.mkdir()
    assert cli_main(["evaluate", "--model", str(empty)]) == 2
    assert "pass --dataset" in capsys.readouterr().err


def test_cli_on_a_cub_layout_scores_keypoints_and_boxes(tiny, tmp_path, capsys):
    """End to end through the CUB loader (a small original layout, tests/data_layouts.py): the dataset comes from the
    training run's arguments, and CUB's keypoints and boxes give the pointing games."""
    from data_layouts import write_small_cub

    _, processor, _, _ = tiny
    root = write_small_cub(tmp_path / "cub")
    model = make_model(processor.tokenizer, ["a", "b", "c"])
    model_dir = tmp_path / "cub_model"
    model.save_pretrained(model_dir)
    make_processor(model, processor.tokenizer, crop_pct=0.875).save_pretrained(model_dir)
    (model_dir / "training_args.json").write_text(json.dumps({"dataset": "cub", "data_dir": str(root.parent),
                                                              "protocol": "official"}))
    with pytest.warns(UserWarning, match="class names differ"):  # "a", "b", "c" vs the layout's species
        assert cli_main(["evaluate", "--model", str(model_dir), "--no-caption-metrics", "--no-progress",
                         "--num-beams", "2"]) == 0
    record = json.loads((model_dir / "eval_results_test.json").read_text())
    assert record["num_images"] == 6 and record["eval_info"]["dataset"] == "cub"
    assert record["eval_info"]["generation_kwargs"] == {"num_beams": 2}
    assert 0 < record["num_pointing_game"] <= 6 and 0 < record["num_pointing_game_bbox"] <= 6
    for key in ("pointing_game_classifier", "pointing_game_captioner", "pointing_game_bbox_classifier",
                "pointing_game_bbox_captioner", "cam_agreement", "top1"):
        assert 0.0 <= record[key] <= 1.0, key
    assert "num_pointing_game_bbox" in capsys.readouterr().out


def _ending_model(model):
    """A copy whose captions end (eos) after 9-22 tokens depending on the image: beam search then pads the batch's
    finished beams with eos, the case where batch-size effects would show."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder") and parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3.0 / parameter.shape[1] ** 0.5)
        model.captioner.lm_head.bias[model.config.eos_token_id] += 1.0
    return model


@pytest.mark.parametrize("generation", [{"num_beams": 3}, {}, {"do_sample": True, "top_k": 1}],
                         ids=["beam3", "greedy", "sampling"])
def test_cam_metrics_do_not_depend_on_the_batch_size(tiny, generation):
    """A generated caption is scored up to its first eos whatever pads it in its batch (beam search pads finished
    beams with eos: scored as words, they changed the captioner's maps with the batch size)."""
    model, processor, ds, _ = tiny
    model = _ending_model(model)
    if generation.get("num_beams"):  # the test has teeth: the batched beam search really pads with eos
        pixels = processor.image_processor(list(ds["test"]["image"]), return_tensors="pt")["pixel_values"]
        ids = model.generate(pixel_values=pixels, **generation)
        eos = model.config.eos_token_id
        assert any(bool(((row[1:-1] == eos) & (row[2:] == eos)).any()) for row in ids)
    results = [evaluate_model(model, processor, ds["test"], batch_size=size, caption_metrics=False, progress=False,
                              generation_kwargs=generation) for size in (1, 12)]
    for key in ("cam_agreement", "pointing_game_captioner", "energy_pointing_captioner", "pxap_captioner",
                "max_box_acc_v2_captioner", "mean_caption_words"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-6), key


def test_the_classifier_class_says_it_does_not_generate(tiny):
    model, _, _, model_dir = tiny
    from cam_joint import CamJointForImageClassification

    classifier = CamJointForImageClassification.from_pretrained(model_dir)
    with pytest.raises(TypeError, match="only classifies.*AutoModel"):
        classifier.generate(pixel_values=torch.zeros(1, 3, 64, 64))
