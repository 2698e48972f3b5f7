"""Tests run offline, never prompt, and keep caches out of the user's home directory."""
import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-test-")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: one core per worker, no oversubscribed thread pools
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and steadiest on a busy machine, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
