"""CamJointModel core: typed outputs per variant, the feature-map shortcut, offline building and loading, the timm
encoder's own initialisation and buffers surviving `post_init` / `from_pretrained`, clear errors on bad input and
on weights that do not fit, and the frozen encoder.
"""

from __future__ import annotations

import socket

import pytest
import timm
import torch

from cam_joint import CamJointConfig, CamJointForImageClassification, CamJointModel, CamJointOutput

NUM_LABELS = 5
VOCAB = 20
MAX_LEN = 10


def tiny_config(**overrides) -> CamJointConfig:
    kwargs = dict(encoder_name="resnet18", variant="cam", intermediate_size=16, hidden_size=16,
                  word_embedding_size=8, vocab_size=VOCAB, num_labels=NUM_LABELS, max_caption_length=MAX_LEN,
                  num_concepts=12)
    kwargs.update(overrides)
    return CamJointConfig(**kwargs)


def build(seed: int = 0, **overrides) -> CamJointModel:
    torch.manual_seed(seed)
    return CamJointModel(tiny_config(**overrides))


def batch(batch_size: int = 2, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, size, size, generator=g)
    input_ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 10, 11, 2]])[:batch_size]
    labels = torch.tensor([1, 3])[:batch_size]
    return pixel_values, input_ids, labels


# --------------------------------------------------------------------------------------------- variants
EXPECTED_PARTS = {  # variant: (classifier, captioner, intermediate, cam_loss)
    "cnn": (True, False, False, False),
    "lrcn": (False, True, False, False),
    "intermediate": (True, True, True, False),
    "cam": (True, True, True, True),
    "semantic": (True, True, True, False),
}


@pytest.mark.parametrize("variant", list(EXPECTED_PARTS))
def test_forward_outputs_per_variant(variant):
    has_classifier, has_captioner, has_intermediate, has_cam = EXPECTED_PARTS[variant]
    model = build(variant=variant).train()
    pixel_values, input_ids, labels = batch()
    kwargs = {}
    if variant == "semantic":
        kwargs["concept_labels"] = (torch.rand(2, 12) > 0.5).float()
    out = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels, **kwargs)
    assert isinstance(out, CamJointOutput)
    assert (model.classifier is not None) == has_classifier
    assert (model.captioner is not None) == has_captioner
    assert hasattr(model, "intermediate") == has_intermediate

    if has_classifier:
        assert out.logits.shape == (2, NUM_LABELS)
        assert out.class_loss is not None and out.class_loss.ndim == 0
    else:
        assert out.logits is None and out.class_loss is None
    if has_captioner:
        assert out.caption_logits.shape == (2, input_ids.shape[1], VOCAB)
        assert out.caption_loss is not None and out.caption_loss.ndim == 0
    else:
        assert out.caption_logits is None and out.caption_loss is None
    if has_cam:
        assert out.cam_loss is not None and out.cam_loss.ndim == 0 and torch.isfinite(out.cam_loss)
    else:
        assert out.cam_loss is None
    if variant == "semantic":
        assert out.concept_probs.shape == (2, 12)
        assert ((out.concept_probs >= 0) & (out.concept_probs <= 1)).all()
        assert out.concept_loss is not None
    else:
        assert out.concept_probs is None and out.concept_loss is None

    parts = [t for t in (out.class_loss, out.caption_loss, out.cam_loss, out.concept_loss) if t is not None]
    assert torch.allclose(out.loss, sum(parts))
    assert out.loss.requires_grad
    assert out.feature_maps.shape == (2, 512, 2, 2)
    embed_size = {"cnn": 512, "lrcn": 512, "intermediate": 16, "cam": 16, "semantic": 12}[variant]
    assert out.image_embeds.shape == (2, embed_size)
    out.loss.backward()  # one backward of one scalar, whatever the variant


def test_no_targets_means_no_loss():
    model = build().eval()
    pixel_values, input_ids, labels = batch()
    out = model(pixel_values=pixel_values)
    assert out.loss is None and out.class_loss is None and out.caption_loss is None and out.cam_loss is None
    assert out.logits.shape == (2, NUM_LABELS) and out.caption_logits is None
    out = model(pixel_values=pixel_values, labels=labels)  # cam needs both targets
    assert out.cam_loss is None and torch.equal(out.loss, out.class_loss)


def test_cnn_cannot_generate():
    model = build(variant="cnn").eval()
    with pytest.raises(ValueError, match="no captioner"):
        model.generate(pixel_values=batch()[0])


def test_lrcn_has_no_classifier_and_still_generates():
    model = build(variant="lrcn").eval()
    pixel_values, input_ids, labels = batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    assert out.logits is None and out.class_loss is None
    assert torch.equal(out.loss, out.caption_loss)
    generated = model.generate(pixel_values=pixel_values, max_length=6)
    assert generated.shape[0] == 2 and (generated[:, 0] == 1).all()


def test_greedy_generate_matches_the_models_own_greedy_decoder():
    """Transformers' loop with the LSTM cache gives the same tokens as a plain step-by-step greedy decode."""
    model = build(seed=4).eval()
    pixel_values = batch()[0]
    generated = model.generate(pixel_values=pixel_values, max_length=MAX_LEN, do_sample=False, num_beams=1)
    reference = model.greedy_captions(model.get_image_embeds(pixel_values), max_length=MAX_LEN)
    assert torch.equal(generated[:, : reference.shape[1]], reference)


# ------------------------------------------------------------------------------------------ feature maps
@pytest.mark.parametrize("variant", ["cam", "semantic", "lrcn"])
def test_feature_maps_give_identical_results(variant):
    model = build(variant=variant).eval()
    pixel_values, input_ids, labels = batch()
    from_pixels = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    with torch.no_grad():
        feature_maps = model.get_feature_maps(pixel_values)
    from_maps = model(feature_maps=feature_maps, input_ids=input_ids, labels=labels)
    for name in ("loss", "class_loss", "caption_loss", "cam_loss", "logits", "caption_logits", "image_embeds",
                 "concept_probs"):
        a, b = getattr(from_pixels, name), getattr(from_maps, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a, b), name
    if model.captioner is not None:
        assert torch.equal(model.generate(pixel_values=pixel_values, max_length=6),
                           model.generate(feature_maps=feature_maps, max_length=6))
    if model.classifier is not None:
        classifier_view = CamJointForImageClassification(model.config)
        # The classifier is the joint model without its captioner: the same weights under the same names.
        missing, unexpected = classifier_view.load_state_dict(model.state_dict(), strict=False)
        assert missing == [] and all(key.startswith("captioner.") for key in unexpected)
        classifier_view.eval()
        assert torch.equal(classifier_view(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)
        assert torch.equal(classifier_view(pixel_values=pixel_values).logits,
                           classifier_view(feature_maps=feature_maps).logits)


@pytest.mark.parametrize("encoder", [dict(encoder_name="resnet18"),
                                     dict(encoder_name="resnet10t", encoder_kwargs={"output_stride": 8},
                                          encoder_feature_stage=3)])
def test_channels_last_encoder_gives_the_nchw_results(encoder, monkeypatch):
    """The encoder reads channels_last pixels (faster on CPU): logits, losses, the CAM loss and every gradient are
    fp32 NCHW's within 1e-4 relative, in training and evaluation."""
    seen = []

    def record(module, inputs):
        seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))

    def run(memory_format, train: bool):
        model = build(**encoder).train(train)
        monkeypatch.setattr(model, "encoder_memory_format", memory_format)
        first_conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        handle = first_conv.register_forward_pre_hook(record)
        pixel_values, input_ids, labels = batch(size=96)
        out = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
        handle.remove()
        values = {name: getattr(out, name).detach() for name in ("logits", "loss", "cam_loss", "caption_logits")}
        if train:
            out.loss.backward()
            values.update({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
        return values

    for train in (True, False):
        nchw, channels_last = run(torch.contiguous_format, train), run(torch.channels_last, train)
        assert seen[-2:] == [False, True]  # the comparison really is NCHW against NHWC
        assert nchw.keys() == channels_last.keys()
        for name, reference in nchw.items():
            scale = reference.abs().max().clamp_min(1e-12)
            assert ((channels_last[name] - reference).abs().max() / scale) < 1e-4, name


# -------------------------------------------------------------------------------------------- offline
@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection, hub download or timm pretrained-weight load fails the test."""
    attempts = []

    def refuse(name):
        def _refuse(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"network / download attempted: {name}")
        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    import huggingface_hub
    import timm.models._builder as timm_builder

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(timm_builder, "load_pretrained", refuse("timm load_pretrained"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("torch.hub download"))
    created = []
    real_create_model = timm.create_model

    def create_model(*args, **kwargs):
        created.append(kwargs.get("pretrained", False))
        return real_create_model(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    return attempts, created


def test_building_and_loading_never_download(no_network, tmp_path):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    attempts, created = no_network
    model = build()
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path)
    as_classifier = CamJointForImageClassification.from_pretrained(tmp_path)
    assert attempts == []
    assert created and not any(created), "the encoder must always be created with pretrained=False"
    pixel_values = batch()[0]
    model.eval()
    assert torch.equal(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)
    assert torch.equal(as_classifier(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits)


# ----------------------------------------------------------------------------------- timm encoder init
def test_post_init_keeps_timms_own_encoder_initialisation():
    torch.manual_seed(123)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="")
    model = build(seed=123)
    expected, got = reference.state_dict(), model.encoder.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # BatchNorm statistics are timm's (fresh: mean 0, var 1), not touched by the heads' initialisation
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    # the heads were initialised by _init_weights (std 0.02 normal, zero bias)
    assert torch.equal(model.classifier.bias, torch.zeros_like(model.classifier.bias))
    assert model.classifier.weight.std() < 0.05


def test_batchnorm_statistics_survive_save_and_from_pretrained(tmp_path):
    model = build(seed=5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
                module.num_batches_tracked.fill_(7)
                module.weight.mul_(1.5)
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path)
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    for key in saved:
        assert torch.equal(saved[key], reloaded[key]), key
    model.eval()
    pixel_values, input_ids, labels = batch()
    a = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    b = loaded(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.caption_logits, b.caption_logits)


def test_non_persistent_timm_buffers_are_valid_after_from_pretrained(tmp_path):
    """resnetblur18's BlurPool2d `filt` is a non-persistent buffer: not in the checkpoint, rebuilt on load."""
    model = build(seed=6, encoder_name="resnetblur18").eval()
    buffers = {name: b for name, b in model.named_buffers() if name.endswith(".filt")}
    assert buffers, "resnetblur18 should have BlurPool2d filt buffers"
    assert not any(name in model.state_dict() for name in buffers), "filt should be non-persistent"
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path)
    fresh = build(seed=99, encoder_name="resnetblur18")
    loaded_buffers, fresh_buffers = dict(loaded.named_buffers()), dict(fresh.named_buffers())
    for name, value in buffers.items():
        assert torch.isfinite(loaded_buffers[name]).all()
        assert torch.equal(loaded_buffers[name], fresh_buffers[name]), name
        assert torch.equal(loaded_buffers[name], value), name
    pixel_values, input_ids, labels = batch()
    a = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    b = loaded(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    for name in ("logits", "caption_logits", "loss"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ------------------------------------------------------------------------------- weights that do not fit
@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet18_ckpt")
    build(seed=7).save_pretrained(path)
    return path


def test_other_num_labels_raises(resnet18_checkpoint):
    with pytest.raises((RuntimeError, ValueError)):
        CamJointModel.from_pretrained(resnet18_checkpoint, num_labels=NUM_LABELS + 2)


def test_other_encoder_with_other_width_raises(resnet18_checkpoint):
    config = CamJointConfig.from_pretrained(resnet18_checkpoint)
    config.encoder_name = "resnet50"  # 2048 channels; the checkpoint says 512
    with pytest.raises(ValueError, match="encoder_channels"):
        CamJointModel.from_pretrained(resnet18_checkpoint, config=config)
    config.encoder_channels = None  # even without the recorded width: the sizes do not fit
    with pytest.raises((RuntimeError, ValueError)):
        CamJointModel.from_pretrained(resnet18_checkpoint, config=config)


def test_other_encoder_with_same_width_raises_instead_of_random_init(resnet18_checkpoint):
    """resnet34 has resnet18's channel widths but more blocks: loading resnet18 weights into it leaves those blocks
    randomly initialised. Transformers 5 only prints a MISSING report; CamJoint must refuse."""
    config = CamJointConfig.from_pretrained(resnet18_checkpoint)
    config.encoder_name = "resnet34"
    with pytest.raises((RuntimeError, ValueError), match="(?i)missing"):
        CamJointModel.from_pretrained(resnet18_checkpoint, config=config)


def test_checkpoint_with_extra_weights_raises(tmp_path):
    """The reverse: resnet34 weights into a resnet18 model leave UNEXPECTED (unused) weights."""
    build(seed=8, encoder_name="resnet34").save_pretrained(tmp_path)
    config = CamJointConfig.from_pretrained(tmp_path)
    config.encoder_name = "resnet18"
    with pytest.raises((RuntimeError, ValueError), match="(?i)unexpected"):
        CamJointModel.from_pretrained(tmp_path, config=config)


# -------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def cam_model():
    return build(seed=9).eval()


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 1, 64, 64), (2, 4, 64, 64), (1, 2, 3, 64, 64)])
def test_bad_pixel_values_raise_clearly(cam_model, shape):
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        cam_model(pixel_values=torch.randn(*shape))


def test_bad_feature_maps_raise_clearly(cam_model):
    with pytest.raises(ValueError, match="feature_maps must have shape"):
        cam_model(feature_maps=torch.randn(2, 256, 2, 2))
    with pytest.raises(ValueError, match="feature_maps must have shape"):
        cam_model(feature_maps=torch.randn(2, 512))
    with pytest.raises(ValueError, match="pixel_values"):
        cam_model()


def test_too_long_caption_raises(cam_model):
    pixel_values = batch()[0]
    too_long = torch.full((2, MAX_LEN + 1), 5)
    with pytest.raises(ValueError, match="max_caption_length"):
        cam_model(pixel_values=pixel_values, input_ids=too_long)
    cam_model(pixel_values=pixel_values, input_ids=torch.full((2, MAX_LEN), 5))  # the limit itself is fine


@pytest.mark.parametrize("bad_id", [VOCAB, VOCAB + 100, -1])
def test_token_id_outside_vocab_raises(cam_model, bad_id):
    input_ids = torch.tensor([[1, 5, bad_id, 2], [1, 5, 6, 2]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cam_model(pixel_values=batch()[0], input_ids=input_ids)


@pytest.mark.parametrize("bad_label", [NUM_LABELS, 1000, -1])
def test_unknown_class_id_raises(cam_model, bad_label):
    with pytest.raises(ValueError, match=f"class id {bad_label} is unknown"):
        cam_model(pixel_values=batch()[0], labels=torch.tensor([0, bad_label]))


def test_labels_of_wrong_shape_raise(cam_model):
    with pytest.raises(ValueError, match="labels must be class ids"):
        cam_model(pixel_values=batch()[0], labels=torch.tensor([[0], [1]]))


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="variant"):
        tiny_config(variant="resnet")
    with pytest.raises(ValueError, match="conditioning"):
        tiny_config(conditioning="sometimes")
    with pytest.raises(ValueError, match="use_cam_loss"):
        tiny_config(variant="intermediate", use_cam_loss=True)
    with pytest.raises(ValueError, match="hidden_size"):
        tiny_config(hidden_size=0)


# ------------------------------------------------------------------------------------------ frozen encoder
def _assert_frozen(model):
    model.train()
    assert not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())
    assert model.classifier.training and getattr(model, "captioner", model.classifier).training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder."))


def test_frozen_encoder_stays_frozen_in_train_mode():
    model = build(seed=10)
    _assert_frozen(model)
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    pixel_values, input_ids, labels = batch()
    out = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels)
    out.loss.backward()
    assert torch.equal(bn.running_mean, before), "a frozen encoder's BatchNorm statistics must not drift"
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.classifier.weight.grad is not None and model.intermediate[0].weight.grad is not None


def test_frozen_encoder_stays_frozen_after_from_pretrained(tmp_path):
    """Loading must not hand the optimizer a 'frozen' encoder whose parameters require grad."""
    build(seed=11).save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path)
    assert loaded.config.freeze_encoder
    _assert_frozen(loaded)
    _assert_frozen(CamJointForImageClassification.from_pretrained(tmp_path))


def test_unfrozen_encoder_trains(tmp_path):
    model = build(seed=12, freeze_encoder=False).train()
    assert model.encoder.training
    assert all(p.requires_grad for p in model.encoder.parameters())
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    pixel_values, input_ids, labels = batch()
    model(pixel_values=pixel_values, input_ids=input_ids, labels=labels).loss.backward()
    assert not torch.equal(bn.running_mean, before)
    assert all(p.grad is not None for p in model.encoder.parameters())
    model.save_pretrained(tmp_path)
    loaded = CamJointModel.from_pretrained(tmp_path).train()
    assert not loaded.config.freeze_encoder and loaded.encoder.training
    assert all(p.requires_grad for p in loaded.encoder.parameters())


def test_set_encoder_trainable_switches_both_ways():
    model = build(seed=13)
    model.set_encoder_trainable(True)
    model.train()
    assert model.encoder.training and not model.config.freeze_encoder
    assert all(p.requires_grad for p in model.encoder.parameters())
    model.set_encoder_trainable(False)
    _assert_frozen(model)
