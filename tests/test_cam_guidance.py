"""One-way CAM guidance (issue 19): the captioner as a teacher, the mask oracle, the evidence loss, and the
discriminative caption score's word weights."""

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from test_cam_loss import batch, parameter_grads, tiny_model

from cam_joint import CamJointConfig, CamJointModel
from cam_joint.cam_core import map_cosine
from cam_joint.discriminative_words import caption_word_weights, positive_pmi_word_weights
from cam_joint.losses_cam_joint import evidence_outside_share, guidance_loss
from cam_joint.modeling_cam_joint import AllClassesTarget, ClassTarget


def guide_masks(size, spatial=8, seed=2):
    """Binary masks at twice the map's resolution: each map cell's guide is the mean of a 2 x 2 block."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(size, spatial, spatial, generator=generator) > 0.6).float()


# ------------------------------------------------------------------------------------------------ evidence
def test_evidence_share_of_a_logit_decomposed_by_hand():
    """Two channels, 2 x 2 maps, a linear head on p = GAP(A): M_k = sum_c (W_kc / hw) A_c, computed by hand."""
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, 0] = 4.0  # channel 0 lives top left, channel 1 bottom right
    a[0, 1, 1, 1] = 4.0
    weight = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    maps = torch.einsum("kc,bchw->kbhw", weight / 4, a)
    torch.testing.assert_close(maps[0, 0], torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    torch.testing.assert_close(maps[1, 0], torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    # Each map's spatial sum is the logit W_k . p: the decomposition the loss reads.
    torch.testing.assert_close(maps.sum((-2, -1))[:, 0], weight @ a.mean((2, 3))[0])
    guide = torch.tensor([[[0.5, 0.0], [0.0, 0.0]]])  # rescaled to max 1: the top-left cell
    # class 0: half its |evidence| (the -1, bottom right) lies outside; class 1: none.
    assert evidence_outside_share(maps, guide).item() == pytest.approx((0.5 + 0.0) / 2)
    # A soft guide counts a cell (1 - g) outside.
    soft = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    assert evidence_outside_share(maps, soft).item() == pytest.approx((0.5 * 1 / 2 + 0.0) / 2)


def test_evidence_share_of_zero_maps_is_finite():
    maps = torch.zeros(3, 2, 4, 4, requires_grad=True)
    share = evidence_outside_share(maps * 2, torch.zeros(2, 4, 4))
    share.backward()
    assert share.item() == 0.0 and torch.isfinite(maps.grad).all()


def test_signed_class_maps_sum_to_the_logits_first_order_contribution():
    """With a linear f_medi, sum_ij M_k = logit_k - (w_k . b_medi + b_k): every class's signed Grad-CAM decomposes
    its logit over the map's cells."""
    model = tiny_model(intermediate_activation="identity", cam_guide="mask", cam_guidance_loss="evidence").train()
    maps, labels, ids = batch(model)
    signed, _ = model.guidance_maps(maps, model.image_vector(maps.mean((2, 3))), labels, ids,
                                    guide_masks(3))
    assert signed.shape == (7, 3, 4, 4)
    logits = model.classifier(model.image_vector(maps.mean((2, 3))))
    offsets = model.classifier.weight @ model.intermediate[0].bias + model.classifier.bias
    # Grad-CAM's a_k = (1/hw) dy/dp: sum_ij sum_c a_kc A_c,ij = sum_c dy/dp_c mean_ij A_c,ij = dy/dp . p.
    torch.testing.assert_close(signed.sum((-2, -1)).T, logits - offsets, rtol=1e-4, atol=1e-5)


def hand_guidance_loss(model, maps, labels, masks, loss):
    """The guidance loss written out for f_medi = ReLU(W1 p + b1) and f_class = W z + b, from the formulas alone."""
    pooled = maps.mean((2, 3))
    linear = model.intermediate[0]
    active = (pooled @ linear.weight.T + linear.bias > 0).float()  # (B, D)
    weight = model.classifier.weight  # (K, D)
    # dy_k/dp = W1^T (1[pre > 0] * w_k), Grad-CAM weight a_k = dy_k/dp / hw
    grads = torch.einsum("bd,kd,dc->kbc", active, weight, linear.weight) / (maps.shape[2] * maps.shape[3])
    class_maps = torch.einsum("kbc,bchw->kbhw", grads, maps)
    guide = F.avg_pool2d(masks[:, None], 2)[:, 0]  # 8 x 8 -> 4 x 4 by area
    if loss == "cosine":
        answer = torch.relu(class_maps[labels, torch.arange(len(labels))])
        return (1 - map_cosine(answer, guide)).mean()
    guide = guide / guide.amax((-2, -1), keepdim=True).clamp_min(1e-12)
    magnitude = class_maps.abs()
    return ((magnitude * (1 - guide)).sum((-2, -1)) / magnitude.sum((-2, -1))).mean()


@pytest.mark.parametrize("loss", ["cosine", "evidence"])
def test_mask_oracle_loss_of_the_model_equals_the_hand_formula(loss):
    model = tiny_model(cam_guide="mask", cam_guidance_loss=loss).train()
    maps, labels, ids = batch(model)
    masks = guide_masks(3)
    out = model(feature_maps=maps, labels=labels, input_ids=ids, guide_masks=masks)
    with torch.no_grad():
        expected = hand_guidance_loss(model, maps, labels, masks, loss)
    torch.testing.assert_close(out.cam_loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_optimising_the_evidence_loss_moves_every_class_s_evidence_inside_the_mask():
    model = tiny_model(cam_guide="mask", cam_guidance_loss="evidence").train()
    maps, labels, ids = batch(model)
    masks = guide_masks(3)
    optimizer = torch.optim.SGD(model.intermediate.parameters(), lr=0.05)
    shares = []
    for _ in range(30):
        out = model(feature_maps=maps, labels=labels, input_ids=ids, guide_masks=masks)
        shares.append(out.cam_loss.item())
        optimizer.zero_grad()
        out.cam_loss.backward()
        optimizer.step()
    assert shares[-1] < shares[0], shares


@pytest.mark.parametrize("trains", ["intermediate", "all"])
def test_mask_oracle_routing_follows_cam_trains(trains):
    model = tiny_model(cam_guide="mask", cam_guidance_loss="evidence", cam_trains=trains, class_loss_weight=0.0,
                       caption_loss_weight=0.0, freeze_encoder=False).train()
    _, labels, ids = batch(model, size=2)
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels, input_ids=ids,
                guide_masks=torch.rand(2, 64, 64))
    grads = parameter_grads(model, out.loss)
    trained = {n.split(".")[0] for n, v in grads.items() if v != 0.0}
    assert trained == ({"intermediate"} if trains == "intermediate" else {"intermediate", "classifier", "encoder"})


def test_mask_oracle_without_masks_fails_clearly():
    model = tiny_model(cam_guide="mask").train()
    maps, labels, ids = batch(model)
    with pytest.raises(ValueError, match="guide_masks"):
        model(feature_maps=maps, labels=labels, input_ids=ids)


def test_guidance_options_are_checked():
    with pytest.raises(ValueError, match="cam_guide='teacher'"):
        CamJointConfig(cam_guide="teacher")
    with pytest.raises(ValueError, match="one-way guide"):
        CamJointConfig(cam_guidance_loss="evidence")  # eq. 6 has its own loss
    with pytest.raises(ValueError, match="does not train"):
        CamJointConfig(variant="intermediate", cam_guide="mask")
    with pytest.raises(ValueError, match="no classifier"):
        CamJointConfig(variant="lrcn", cam_caption_target="discriminative")


# ------------------------------------------------------------------------------------------------ teacher
@pytest.mark.parametrize("mode", ["first_order", "exact"])
@pytest.mark.parametrize("trains", ["intermediate", "all"])
@pytest.mark.parametrize("loss", ["cosine", "evidence"])
def test_the_captioner_as_teacher_trains_only_the_classifier_side(trains, loss, mode):
    """L_cam's gradient reaches neither the captioner's parameters nor f_medi through the captioner's map: it equals
    the gradient of the same loss against the captioner's map computed apart, as a constant."""
    model = tiny_model(cam_guide="captioner", cam_guidance_loss=loss, cam_trains=trains,
                       cam_gradient_mode=mode).train()
    maps, labels, ids = batch(model)
    out = model(feature_maps=maps, labels=labels, input_ids=ids)
    grads = parameter_grads(model, out.cam_loss)
    assert sum(v for n, v in grads.items() if n.startswith("intermediate")) > 0
    assert {n for n, v in grads.items() if n.startswith("captioner") and v != 0.0} == set()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    teacher = model.grad_cam(feature_maps=maps, caption_ids=ids).detach()
    evidence = loss == "evidence"
    if evidence:
        low, high = teacher.amin((-2, -1), keepdim=True), teacher.amax((-2, -1), keepdim=True)
        teacher = (teacher - low) / (high - low)
    student = model.cam_maps(maps, [AllClassesTarget() if evidence else ClassTarget(labels)], create_graph=True,
                             through_features=trains == "all", method="gradcam" if evidence else None,
                             relu=False if evidence else None)
    expected = guidance_loss(student, teacher, loss)
    torch.testing.assert_close(out.cam_loss.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    model.zero_grad(set_to_none=True)
    expected.backward()
    theirs = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == theirs.keys()
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=1e-4, atol=1e-7, msg=name)


def test_the_mutual_loss_does_train_the_captioner_where_the_teacher_does_not():
    """The contrast that makes the test above mean something: eq. 6 routed to every part (second order) trains the
    captioner."""
    model = tiny_model(cam_trains="all", cam_gradient_mode="exact", class_loss_weight=0.0,
                       caption_loss_weight=0.0).train()
    maps, labels, ids = batch(model)
    grads = parameter_grads(model, model(feature_maps=maps, labels=labels, input_ids=ids).loss)
    assert sum(v for n, v in grads.items() if n.startswith("captioner")) > 0


# ------------------------------------------------------------------------------------------------ word weights
class HandTokenizer:
    """Words -> ids for a hand-made corpus (4 special tokens first, as the caption tokenizer has them)."""

    def __init__(self, words):
        self.vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
        self.all_special_ids = [0, 1, 2, 3]

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return self.vocab

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.vocab[w] for w in t.split()] for t in texts]}


def test_discriminative_weights_of_a_hand_made_corpus():
    tokenizer = HandTokenizer(["a", "red", "blue", "bird", "wing"])
    v = tokenizer.vocab
    # Class 0 always says "red", class 1 always "blue", both say "a bird": those weigh 0.
    weights = caption_word_weights(tokenizer, [["a red bird"], ["a blue bird"], ["a red bird"]], [0, 1, 0], 2)
    assert weights[0, v["red"]] == 1 and weights[1, v["blue"]] == 1
    assert weights[0, v["bird"]] == weights[0, v["a"]] == weights[1, v["bird"]] == weights[0, v["blue"]] == 0
    assert (weights[:, :4] == 0).all()
    # PMI values: class 0 "red bird", "red wing" (4 words), class 1 "blue bird" (2), N = 6.
    weights = caption_word_weights(tokenizer, [["red bird", "red wing"], ["blue bird"]], [0, 1], 2)
    pmi_red, pmi_wing = math.log(2 * 6 / (2 * 4)), math.log(1 * 6 / (1 * 4))
    assert weights[0, v["red"]].item() == pytest.approx(1.0) and weights[0, v["wing"]].item() == pytest.approx(
        pmi_wing / pmi_red)
    assert weights[0, v["bird"]] == 0  # PMI log(6/8) < 0: used less than average by class 0
    assert weights[1, v["bird"]].item() == pytest.approx(math.log(6 / 4) / math.log(6 / 2))


def test_the_word_table_shows_the_first_classes_and_counts_the_rest():
    from cam_joint.discriminative_words import word_table

    table = word_table(["a", "b", "c"], [[("red", 1.0)], [("blue", 1.0), ("cap", 0.5)], []], max_classes=2)
    assert table.splitlines()[2:4] == ["| a | red (1.00) |", "| b | blue (1.00), cap (0.50) |"]
    assert "| c |" not in table and "1 more classes" in table


def test_a_class_without_captions_weighs_nothing_and_specials_never_count():
    weights = positive_pmi_word_weights([[4, 5], [1, 2, 6]], [0, 0], num_labels=2, vocab_size=7, ignored_ids=[1, 2])
    assert (weights[1] == 0).all() and (weights[0, [1, 2]] == 0).all()


def test_discriminative_caption_maps_come_from_the_saved_weights(tmp_path):
    model = tiny_model(cam_caption_target="discriminative").eval()
    maps, labels, ids = batch(model)
    with pytest.raises(ValueError, match="never set"):
        model.grad_cam(feature_maps=maps, caption_ids=ids, caption_classes=labels)
    with pytest.raises(ValueError, match="shape"):
        model.set_caption_word_weights(torch.ones(2, 3))
    # All words weighing 1 (eos and specials 0): the score is log P of the caption's words.
    ones = torch.ones(7, model.config.vocab_size)
    ones[:, [0, 1, 2, 3]] = 0
    model.set_caption_word_weights(ones)
    summed = tiny_model(cam_caption_target="sum").eval()
    words_only = ids.clone()
    words_only[words_only == 2] = 0  # eos weighs 0: the same as a caption that stops without it
    torch.testing.assert_close(model.grad_cam(feature_maps=maps, caption_ids=ids, caption_classes=labels),
                               summed.grad_cam(feature_maps=maps, caption_ids=words_only))
    weights = torch.rand(7, model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    model.set_caption_word_weights(weights)
    before = model.grad_cam(feature_maps=maps, caption_ids=ids)  # no label: the predicted class's weights
    predicted = model.predicted_classes(maps)
    torch.testing.assert_close(before, model.grad_cam(feature_maps=maps, caption_ids=ids, caption_classes=predicted))
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.caption_word_weights, weights)
    torch.testing.assert_close(loaded.grad_cam(feature_maps=maps, caption_ids=ids), before)


# ------------------------------------------------------------------------------------------------ training
def test_the_batch_carries_the_deciding_parts_mask_at_the_input_size():
    from cam_joint import CamJointImageProcessor, CamJointProcessor, build_caption_tokenizer
    from cam_joint.data.synthetic import PART_INDEX, make_synthetic_dataset
    from cam_joint.training import CaptionedImages

    split = make_synthetic_dataset(num_classes=2, train_per_class=2, validation_per_class=1, test_per_class=1,
                                   image_size=48)["train"]
    processor = CamJointProcessor(CamJointImageProcessor(input_size=(3, 48, 48), crop_pct=1.0),
                                  build_caption_tokenizer([c for row in split["captions"] for c in row]))
    data = CaptionedImages(split, processor, 40, seed=0, guide_masks=True)
    masks = data.collate([data[i] for i in range(len(data))])["guide_masks"]
    assert masks.shape == (4, 48, 48)
    for row, mask in zip(split, masks):
        parts = torch.from_numpy(np.array(row["part_mask"]))
        expected = sum(parts == PART_INDEX[name] for name in row["discriminative_parts"]).float()
        assert expected.sum() > 0
        torch.testing.assert_close(mask, expected)


def test_the_mask_is_resized_and_cropped_as_timm_transforms_the_image():
    """Reference: timm's own evaluation transform (no normalisation) on the mask drawn as an RGB image."""
    from PIL import Image

    from cam_joint import CamJointImageProcessor
    from cam_joint.data.guide_masks import deciding_parts_mask

    parts = np.zeros((30, 40), dtype=np.uint8)  # 40 wide, 30 high: the resize and the crop both matter
    parts[5:20, 3:31] = 4  # a wing
    parts[12:28, 25:38] = 1  # a body over part of it
    processor = CamJointImageProcessor(input_size=(3, 16, 16), crop_pct=0.875, interpolation="bilinear",
                                       mean=(0, 0, 0), std=(1, 1, 1))
    ours = deciding_parts_mask(processor, parts, ["wing"])
    drawn = Image.fromarray(np.repeat((parts == 4)[..., None] * 255, 3, axis=2).astype(np.uint8))
    reference = processor(drawn)["pixel_values"][0, 0]
    assert ours.shape == reference.shape == (16, 16)
    torch.testing.assert_close(ours, reference, atol=1 / 255, rtol=0)
    assert 0 < ours.mean() < 1


def test_mask_guidance_on_a_dataset_without_masks_names_the_dataset_and_the_column():
    from cam_joint.data.synthetic import make_synthetic_dataset
    from cam_joint.training import prepare_cam_targets

    split = make_synthetic_dataset(num_classes=2, train_per_class=1, validation_per_class=1, test_per_class=1,
                                   image_size=48)["train"].remove_columns(["part_mask"])
    model = tiny_model(cam_guide="mask", num_labels=2)
    with pytest.raises(ValueError, match="dataset 'flowers' has no 'part_mask' column"):
        prepare_cam_targets(model, None, split, "flowers")


GUIDED_RUNS = {
    "discriminative": ["--cam-caption-target", "discriminative"],
    "teacher": ["--cam-teacher", "captioner"],
    "mask": ["--cam-mask-guidance"],
    "mask_evidence": ["--cam-mask-guidance", "--cam-guidance-loss", "evidence", "--cam-trains", "all"],
    "teacher_evidence": ["--cam-teacher", "captioner", "--cam-guidance-loss", "evidence", "--cam-caption-target",
                         "discriminative"],
    "mask_feature_cache": ["--cam-mask-guidance", "--freeze-encoder", "--allow-random-frozen-encoder"],
}


@pytest.mark.parametrize("run", list(GUIDED_RUNS))
def test_each_guided_variant_trains_and_its_checkpoint_says_so(run, tmp_path):
    import json

    from test_training import train

    out = train(tmp_path / "out", "--max-steps", "2", *GUIDED_RUNS[run], "--cache-dir", str(tmp_path / "cache"))
    config = json.loads((out / "config.json").read_text())
    recorded = json.loads((out / "training_args.json").read_text())
    options = GUIDED_RUNS[run]
    expected_guide = "mask" if "--cam-mask-guidance" in options else "captioner" if "--cam-teacher" in options \
        else "mutual"
    assert config["cam_guide"] == recorded["cam_guide"] == expected_guide
    assert config["cam_guidance_loss"] == ("evidence" if "evidence" in options else "cosine")
    assert config["cam_trains"] == ("all" if "--cam-trains" in options else "intermediate")
    assert "top1" in json.loads((out / "metrics.json").read_text())
    card = (out / "README.md").read_text()
    assert ("one-way teacher" in card) == (expected_guide == "captioner")
    assert ("(oracle)" in card) == (expected_guide == "mask")
    if "discriminative" in options:
        weights = CamJointModel.from_pretrained(out).caption_word_weights
        assert torch.isfinite(weights).all() and (weights.amax(1) == 1).all()
        printed = run_script("discriminative_words", ["--model", str(out), "--top", "2"])
        labels = json.loads((out / "config.json").read_text())["id2label"].values()
        assert all(f"| {name} | " in printed for name in labels) and "(1.00)" in printed
        assert "most telling words" in card and all(f"| {name} | " in card for name in labels)
    else:
        assert "most telling words" not in card


def run_script(name, argv):
    """A scripts/ file's main(argv), its printed output."""
    import contextlib
    import io

    module = importlib_script(name)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert module.main(argv) == 0
    return output.getvalue()


def test_word_shares_split_a_class_s_weight_by_the_dataset_s_ground_truth():
    """scripts/discriminative_word_shares.py on a hand case: a red-crown class, a distractor painted on the tail."""
    from cam_joint.data.synthetic import ClassSpec

    module_output = run_script("discriminative_word_shares", ["--classes", "2", "--per-class", "3"])
    assert "| deciding |" in module_output and "| distractor |" in module_output
    spec = importlib_script("discriminative_word_shares")
    groups = spec.word_groups(ClassSpec({"crown": "red"}), {"tail"}, {"crown": ["crown", "cap"],
                                                                      "tail": ["tail feathers"]}, {"red", "blue"})
    assert groups == {"deciding": {"crown", "cap", "red"}, "distractor": {"tail", "feathers", "blue"}}
    vocab = {"red": 0, "cap": 1, "blue": 2, "bird": 3}
    shares, _ = spec.weight_shares(torch.tensor([[0.5, 0.25, 0.125, 0.125]]), vocab, [groups])
    assert shares == [{"deciding": 0.75, "distractor": 0.125, "neutral": 0.125}]


def importlib_script(name):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
