"""The docs pages that run `vdf experiment` grids, in tiny mode (the runner is `test_docs.run_page`).

One module, so that a grid run by several pages (experiments.md and its recipe page) trains its
cells once: the runner resumes completed cells from the shared output folder.
"""

import os

import pytest
from test_docs import PAGES_WITH_COMMANDS, ROOT, run_page, runs_experiments


@pytest.fixture(scope="module")
def experiment_outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("experiment_outputs")


@pytest.mark.parametrize(
    "page", [p for p in PAGES_WITH_COMMANDS if runs_experiments(p)], ids=lambda p: os.path.relpath(p, ROOT)
)
def test_page_commands_run_in_tiny_mode(page, in_tmp_cwd, experiment_outputs, monkeypatch):
    run_page(page, in_tmp_cwd, experiment_outputs, monkeypatch)
