import os

import pytest
import torch

# The suite runs on 2-core CI machines: one intra-op thread per worker avoids oversubscription.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty working directory so that runs/ and checkpoints land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
