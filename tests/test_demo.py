"""`cam-joint demo` (`cam_joint.demo`): the Gradio page, tested in a real headless browser, and the Space files.

The browser test serves `build_demo` on 127.0.0.1 in this process and drives Debian's `/usr/bin/chromium` with
Playwright's Python package (never `playwright install`; `.ci/run` installs chromium with apt-get, the `dev` extra
installs gradio and playwright). The browser may only talk to 127.0.0.1: every other request is aborted and recorded.
It uploads images as a person would, waits for the page to show the result, and compares what the page shows with
what `predict_batch` / `cam_overlay` give for the same image. Screenshots go to the test's tmp dir, and one is copied
to /tmp/demo_screenshot.png.

The computation behind the page (`analyse_image`, `read_upload`) is also tested directly on the images a user may
upload: 1x1, 8000x8000, CMYK / greyscale JPEG, RGBA / palette PNG, and a text file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cam_joint.demo as demo_module
from cam_joint import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer
from cam_joint.data.synthetic import make_synthetic_dataset
from cam_joint.demo import (BEAM, END_WORD, GREEDY, INSTALL_HINT, DemoInputError, analyse_image,
                            enlarged, generation_kwargs_for, read_upload, synthetic_example_files)
from cam_joint.hub import check_space_folder, push_to_hub, write_model_card, write_space_app
from cam_joint.inference import cam_overlay, load_image
from cam_joint.prediction import predict_batch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZE = 64  # the tiny model's input size: every overlay the page shows is SIZE x SIZE
NUM_CLASSES = 6  # more than 5, so the page's top-5 list is a real top 5
WAIT_MS = 30_000  # a 2-core machine busy with other work can be slow; a passing run takes far less
HAS_GRADIO = importlib.util.find_spec("gradio") is not None
HAS_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
pytestmark = [  # Gradio's queue calls pandas APIs that pandas 3 deprecates: not this package's business
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]


def _need_browser() -> None:
    """Skip (with the reason) where the browser test cannot run; .ci/run installs all three."""
    if not HAS_GRADIO:
        pytest.skip('gradio is not installed (pip install -e ".[dev]")')
    if not HAS_PLAYWRIGHT:
        pytest.skip('playwright (the Python package) is not installed (pip install -e ".[dev]")')
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium; .ci/run does it)")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor, saved model folder): a 6-class CamJoint model with a 64x64 input, random weights."""
    ds = make_synthetic_dataset(num_classes=NUM_CLASSES, train_per_class=2, validation_per_class=0, test_per_class=1,
                                image_size=SIZE)
    tokenizer = build_caption_tokenizer(c for caps in ds["train"]["captions"] for c in caps)
    names = ds["test"].features["label"].names
    torch.manual_seed(1)  # a seed whose greedy caption is not empty (random weights seldom say eos)
    config = CamJointConfig(encoder_name="resnet10t", vocab_size=len(tokenizer), num_labels=NUM_CLASSES,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                            intermediate_size=32, hidden_size=32, word_embedding_size=16, max_caption_length=8)
    model = CamJointModel(config).eval()
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(
        {**model.encoder_data_config(), "input_size": (3, SIZE, SIZE), "crop_pct": 1.0}), tokenizer)
    folder = tmp_path_factory.mktemp("demo_model") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Files a person may upload, by kind: images of every mode this demo must take, and a text file."""
    root = tmp_path_factory.mktemp("uploads")
    ds = make_synthetic_dataset(num_classes=NUM_CLASSES, train_per_class=0, validation_per_class=0, test_per_class=1,
                                image_size=96)
    bird = ds["test"][0]["image"].convert("RGB")
    files = {"rgb_png": root / "bird.png", "rgba_png": root / "bird_rgba.png", "cmyk_jpeg": root / "bird_cmyk.jpg",
             "grey_jpeg": root / "bird_grey.jpg", "palette_png": root / "bird_palette.png",
             "one_pixel_png": root / "one_pixel.png", "text": root / "notes.txt"}
    bird.save(files["rgb_png"])
    rgba = bird.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(bird.size))  # transparent at the top, opaque at the bottom
    rgba.save(files["rgba_png"])
    bird.convert("CMYK").save(files["cmyk_jpeg"], quality=95)
    bird.convert("L").save(files["grey_jpeg"], quality=95)
    bird.convert("P", palette=Image.Palette.ADAPTIVE).save(files["palette_png"])
    Image.new("RGB", (1, 1), (200, 30, 30)).save(files["one_pixel_png"])
    files["text"].write_text("a red bird with black wings\n(not an image)\n", encoding="utf-8")
    return files


def _expected(model, processor, path, decoding=GREEDY):
    """What the page must show for an image file: predict_batch on the same file, as the CLI computes it."""
    return predict_batch(model, processor, [load_image(path)], generation_kwargs=generation_kwargs_for(decoding),
                         cam=True, per_word=True)


# ------------------------------------------------------------------------------------------------ no browser
def test_import_stays_light():
    """`import cam_joint.demo` (what `cam-joint demo --help` does) imports neither gradio nor torch."""
    code = "import sys, cam_joint.demo; print(sorted(m for m in ('gradio', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_gradio_is_one_line_saying_what_to_install(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    model, processor, folder = tiny
    with pytest.raises(ImportError, match=r'pip install "cam-joint\[demo\]"'):
        demo_module.build_demo(model, processor)
    parser = argparse.ArgumentParser()
    demo_module.add_arguments(parser)
    args = parser.parse_args(["--model", str(folder)])
    assert (args.host, args.port, args.examples) == ("127.0.0.1", None, None)  # loopback unless asked otherwise
    assert demo_module.main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {INSTALL_HINT}"


@pytest.mark.parametrize("kind", ["rgb_png", "rgba_png", "cmyk_jpeg", "grey_jpeg", "palette_png", "one_pixel_png"])
def test_every_image_mode_and_size_gives_the_cli_answer(tiny, uploads, kind):
    model, processor, _ = tiny
    image = read_upload(uploads[kind])
    result = analyse_image(model, processor, image, GREEDY)
    expected = _expected(model, processor, uploads[kind])
    assert result.caption == expected.captions[0] and result.caption
    assert list(result.top_classes) == [name for _, name, _ in expected.top_classes(5)[0]]
    assert len(result.top_classes) == 5
    for overlay in (result.model_input, result.class_overlay, result.caption_overlay):
        assert overlay.shape == (SIZE, SIZE, 3) and overlay.dtype == np.uint8
    assert np.array_equal(result.class_overlay, cam_overlay(expected.pixel_values[0], expected.class_maps[0],
                                                            processor.image_processor.data_config()))
    # One map per caption token after bos, up to the eos (listed as END_WORD) or the length limit.
    assert len(result.words) == len(result.word_maps) >= len(result.caption.split())
    assert result.words[:len(result.caption.split())] == result.caption.split()
    assert (result.words[-1] == END_WORD) != expected.reached_max_length[0]


@pytest.mark.parametrize("variant", ["cnn", "lrcn"])
def test_a_model_with_one_head_shows_what_it_has(uploads, variant):
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet10t", vocab_size=20, num_labels=NUM_CLASSES, variant=variant,
                            intermediate_size=16, hidden_size=16, word_embedding_size=8, max_caption_length=6)
    model = CamJointModel(config).eval()
    tokenizer = build_caption_tokenizer(["a red bird with black wings", "a small grey bird"])
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(
        {**model.encoder_data_config(), "input_size": (3, SIZE, SIZE), "crop_pct": 1.0}), tokenizer)
    result = analyse_image(model, processor, read_upload(uploads["rgb_png"]))
    classifies, captions = variant == "cnn", variant == "lrcn"
    assert (result.top_classes is not None) == (result.class_overlay is not None) == classifies
    assert (result.caption is not None) == (result.caption_overlay is not None) == bool(result.words) == captions
    if HAS_GRADIO:
        demo_module.build_demo(model, processor)  # builds, with the missing head's parts hidden


def test_cli_command_serves_on_loopback_by_default(tiny, monkeypatch):
    pytest.importorskip("gradio", reason='gradio is not installed (pip install -e ".[dev]")')
    import gradio

    from cam_joint.cli import main as cli_main

    launched = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    assert cli_main(["demo", "--model", str(tiny[2]), "--port", "7999", "--device", "cpu"]) == 0
    assert launched == {"server_name": "127.0.0.1", "server_port": 7999}
    assert cli_main(["demo", "--model", str(tiny[2]), "--examples", "/no/such/folder"]) == 2


def test_an_8000_pixel_square_image_works(tiny, tmp_path):
    model, processor, _ = tiny
    path = tmp_path / "huge.png"
    huge = Image.new("RGB", (8000, 8000), (40, 90, 160))
    huge.paste((230, 200, 20), (2000, 3000, 6000, 5000))  # a yellow "bird" on blue
    huge.save(path, compress_level=1)
    result = analyse_image(model, processor, read_upload(path), BEAM)
    assert result.caption == _expected(model, processor, path, BEAM).captions[0]
    assert result.class_overlay.shape == (SIZE, SIZE, 3)


def test_a_file_that_is_not_an_image_gets_a_readable_message(uploads, tmp_path):
    with pytest.raises(DemoInputError) as caught:
        read_upload(uploads["text"])
    message = str(caught.value)
    assert message.startswith("notes.txt is not an image this demo can read") and "JPEG, PNG" in message
    assert str(uploads["text"].parent) not in message  # the server's temp paths are no business of the visitor
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(uploads["cmyk_jpeg"].read_bytes()[:200])
    with pytest.raises(DemoInputError, match="cut.jpg is not an image this demo can read"):
        read_upload(truncated)


# ------------------------------------------------------------------------------------------------ the browser
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny, uploads, tmp_path_factory):
    """The demo page served on 127.0.0.1 (in this process): its URL."""
    _need_browser()
    temp = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))  # uploads and outputs land here, not in /tmp/gradio
        monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        model, processor, _ = tiny
        demo = demo_module.build_demo(model, processor, examples=[uploads["rgb_png"]])
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                                quiet=True)
        try:
            yield url
        finally:
            demo.close()


@pytest.fixture
def page(served, tmp_path):
    """A Chromium page (fresh profile) that may reach 127.0.0.1 only; `page.blocked` lists what it tried besides."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000})
        blocked: list[str] = []

        def loopback_only(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", loopback_only)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.blocked = blocked
        page.goto(served, wait_until="domcontentloaded")
        try:
            yield page
        finally:
            context.close()


def _upload(page, path: Path) -> None:
    """Upload a file as a person would: clear the previous one (its ✕ button), then choose the new one."""
    clear = page.locator("#upload button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _wait_for_text(page, selector: str, *texts: str) -> str:
    """The element's text once it contains every one of `texts`."""
    page.wait_for_function("([sel, texts]) => { const text = document.querySelector(sel)?.innerText || ''; "
                           "return texts.every(t => text.includes(t)); }", arg=[selector, list(texts)])
    return page.locator(selector).inner_text()


def _shown_image(page, selector: str) -> np.ndarray:
    """The picture an output image shows, once the browser has decoded it: its natural size, its pixels (PNG, so
    exactly what the server sent)."""
    page.wait_for_function("sel => { const img = document.querySelector(sel); "
                           "return img && img.complete && img.naturalWidth > 0; }", arg=f"{selector} img")
    size = page.locator(f"{selector} img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    body = page.context.request.get(page.locator(f"{selector} img").get_attribute("src")).body()
    pixels = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert list(size) == [pixels.shape[1], pixels.shape[0]]
    return pixels


def _check_result(page, model, processor, path: Path, decoding: str):
    """The page's answer for `path` is predict_batch's: caption, top-5, the classifier's overlay."""
    expected = _expected(model, processor, path, decoding)
    _wait_for_text(page, "#status", f"Done: {path.name}", decoding)  # this upload's result, not the last one's
    assert page.locator("#caption textarea").input_value() == expected.captions[0] != ""
    shown_classes = page.locator("#top5 dt").all_inner_texts()
    assert shown_classes == [name for _, name, _ in expected.top_classes(5)[0]] and len(shown_classes) == 5
    data_config = processor.image_processor.data_config()
    overlay = _shown_image(page, "#class-cam")
    assert overlay.shape == enlarged(np.zeros((SIZE, SIZE, 3))).shape and overlay.shape[1] >= 256
    want = enlarged(cam_overlay(expected.pixel_values[0], expected.class_maps[0], data_config)).astype(int)
    assert np.abs(overlay.astype(int) - want).max() <= 1  # same maps; at most a rounding step apart
    assert _shown_image(page, "#caption-cam").shape == overlay.shape
    # Shown large in the page, not as a thumbnail in its box.
    assert page.locator("#class-cam img").bounding_box()["width"] >= 256
    return expected


@pytest.mark.slow
def test_demo_page_in_a_real_browser(tiny, uploads, page, tmp_path):
    model, processor, _ = tiny
    data_config = processor.image_processor.data_config()
    started = time.monotonic()

    # An upload: progress is shown while it computes (the model is slowed down so the page can be seen working).
    generate = model.generate

    def slow_generate(*args, **kwargs):
        time.sleep(1.5)
        return generate(*args, **kwargs)

    model.generate = slow_generate
    try:
        _upload(page, uploads["rgb_png"])
        # gr.Progress, shown over the outputs: "Classifying, captioning and computing the Grad-CAM maps - 30%"
        _wait_for_text(page, "#caption .progress-level-inner", "Grad-CAM")
        assert page.locator("#caption [role=progressbar]").count() == 1
        expected = _check_result(page, model, processor, uploads["rgb_png"], GREEDY)
    finally:
        model.generate = generate

    # The caption words: the first word's map is shown, selecting another shows its map.
    words = page.locator("#words label")
    tokens = demo_module.caption_tokens(processor, expected.caption_ids[0], model.config.eos_token_id)
    assert words.all_inner_texts() == tokens and tokens[:2] == expected.captions[0].split()[:2]
    _wait_for_text(page, "#word-map [data-testid=block-label]", "Map of word 1")
    first_src = page.locator("#word-map img").get_attribute("src")
    words.nth(1).click()
    label = _wait_for_text(page, "#word-map [data-testid=block-label]", "Map of word 2")
    assert f"“{tokens[1]}”" in label
    page.wait_for_function("([sel, old]) => document.querySelector(sel)?.getAttribute('src') !== old",
                           arg=["#word-map img", first_src])
    second = enlarged(cam_overlay(expected.pixel_values[0], expected.word_maps[0, 1], data_config)).astype(int)
    assert np.abs(_shown_image(page, "#word-map").astype(int) - second).max() <= 1
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    shutil.copy(tmp_path / "demo.png", "/tmp/demo_screenshot.png")

    # Beam search, chosen on the page, recomputes the caption.
    page.locator("#decoding label", has_text="beam search").click()
    _check_result(page, model, processor, uploads["rgb_png"], BEAM)

    # An RGBA PNG and a CMYK JPEG work as any image does.
    page.locator("#decoding label", has_text="greedy").click()
    _wait_for_text(page, "#status", "Done: bird.png", GREEDY)
    for kind in ("rgba_png", "cmyk_jpeg"):
        _upload(page, uploads[kind])
        _check_result(page, model, processor, uploads[kind], GREEDY)

    # A text file: a readable message on the page and in a toast, the old results cleared, no traceback.
    _upload(page, uploads["text"])
    status = _wait_for_text(page, "#status", "Cannot use this file")
    assert "notes.txt is not an image this demo can read" in status
    assert "notes.txt is not an image" in page.locator("[data-testid=toast-body]").first.inner_text()
    assert page.locator("#caption textarea").input_value() == ""
    assert page.locator("#class-cam img").count() == 0
    assert "Traceback" not in page.content() and "Error" not in page.locator("body").inner_text()
    page.screenshot(path=str(tmp_path / "demo_bad_upload.png"), full_page=True)
    shutil.copy(tmp_path / "demo_bad_upload.png", "/tmp/demo_screenshot_bad_upload.png")

    # Picking the example image instead of uploading one.
    page.locator("#examples button", has_text="bird.png").first.click()
    _check_result(page, model, processor, uploads["rgb_png"], GREEDY)

    assert page.blocked == []  # the page never tried to reach anything but 127.0.0.1
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------------------------------------ the Space
def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_saved_folder_runs_as_a_gradio_space(tiny, uploads, tmp_path):
    model, _, saved = tiny
    folder = tmp_path / "space"
    shutil.copytree(saved, folder)
    write_model_card(folder, model.config, {"top1": 0.5}, dataset_name="synthetic", space=True)
    written = write_space_app(folder, examples=[uploads["rgb_png"]])
    assert {p.name for p in written} == {"app.py", "requirements.txt", "bird.png"}

    meta = _front_matter(folder / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["library_name"] == "transformers" and "model-index" in meta  # still the model's card
    if HAS_GRADIO:
        import gradio

        assert meta["sdk_version"] == gradio.__version__
    from huggingface_hub import SpaceCard

    space_card = SpaceCard.load(folder / "README.md")  # the Hub's own reading of a Space's README
    assert space_card.data.sdk == "gradio" and space_card.data.app_file == "app.py"
    assert "## Demo page" in space_card.text
    requirements = [line for line in (folder / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    assert requirements == [f"cam-joint[demo]=={importlib.metadata.version('cam-joint')}"]
    check_space_folder(folder)

    if not HAS_GRADIO:
        pytest.skip('gradio is not installed: app.py not run (pip install -e ".[dev]")')
    # What the Space runs, without serving: the model loads from the folder's own remote code, the page builds.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    run = subprocess.run([sys.executable, "app.py", "--check"], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "demo page built for CamJointModel" in run.stdout


def test_a_plain_card_has_no_space_metadata(tiny, tmp_path):
    model, _, saved = tiny
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    write_model_card(folder, model.config, {"top1": 0.5}, dataset_name="synthetic")
    meta = _front_matter(folder / "README.md")
    assert "sdk" not in meta and "app_file" not in meta
    assert not (folder / "app.py").exists() and "## Demo page" not in (folder / "README.md").read_text()


def test_pushing_as_a_space_needs_the_space_files(tiny, tmp_path, monkeypatch):
    model, _, saved = tiny
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    unreachable = "http://127.0.0.1:9"  # a push that got past the checks would fail to connect, not with our error
    with pytest.raises(FileNotFoundError, match="lacks app.py, requirements.txt"):
        push_to_hub(folder, "org/demo", token="dummy", endpoint=unreachable, space=True)
    write_space_app(folder)
    write_model_card(folder, model.config, None)  # a model card: no sdk / app_file
    with pytest.raises(ValueError, match="sdk: gradio"):
        push_to_hub(folder, "org/demo", token="dummy", endpoint=unreachable, space=True)

    # With the files, the folder goes to a Space repo (the upload itself is huggingface_hub's, tested in test_hub).
    write_model_card(folder, model.config, None, space=True)
    calls = []

    class Recorded:
        repo_id, commit_url = "org/demo", "http://127.0.0.1:9/spaces/org/demo/commit/1"

    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", kw)) or Recorded())
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or Recorded())
    assert push_to_hub(folder, "org/demo", token="dummy", endpoint=unreachable, space=True).endswith("/commit/1")
    assert calls[0][1]["repo_type"] == "space" and calls[0][1]["space_sdk"] == "gradio"
    assert calls[1][1]["repo_type"] == "space"


def test_pictures_are_enlarged_by_whole_factors_so_map_cells_stay_sharp():
    picture = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = enlarged(picture, min_width=7)
    assert big.shape == (6, 9, 3)  # factor 3: the smallest making it 7 px wide or more
    assert np.array_equal(big[::3, ::3], picture) and np.array_equal(big[2, 8], picture[0, 2])
    assert enlarged(np.zeros((96, 96, 3), np.uint8)).shape[1] >= 256 and enlarged(None) is None


def test_without_an_examples_folder_the_page_offers_synthetic_birds(tiny, tmp_path):
    model, processor = tiny[0], tiny[1]
    paths = synthetic_example_files(tmp_path)
    assert len(paths) == 3 and len(set(paths)) == 3
    for path in paths:
        image = read_upload(path)
        assert image.size == (192, 192)
        assert analyse_image(model, processor, image).class_overlay is not None
