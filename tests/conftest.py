"""Shared test set-up: offline by construction, and the real-data folder beside the repo when it exists."""

import os
from pathlib import Path

# Set before anything imports huggingface_hub: an accidental download must fail loudly, not hang or succeed.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real CUB metadata and captions, real Flowers labels). Skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real dataset files not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
