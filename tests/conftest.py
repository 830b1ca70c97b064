import os
import tempfile

import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

# Hypothesis keeps its example database and caches under .hypothesis/ in the working directory;
# no test writes into the checkout, so they go to a temporary folder.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="vdf-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("vdf", database=DirectoryBasedExampleDatabase(os.path.join(_HYPOTHESIS_HOME, "examples")))
settings.load_profile("vdf")

# The suite runs on 2-core CI machines, on one pytest-xdist worker per core (pyproject's addopts):
# the cores are shared out between the workers' intra-op threads, so none is oversubscribed.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: The test files that take longest (about 20 s to 170 s each on the 2-core machine), longest first.
#: pytest-xdist hands whole files to the workers in collection order (``--dist loadfile``): with
#: these first, the short files fill the gaps at the end and both workers finish together, instead
#: of one worker starting a long file when the other is nearly done.
LONGEST_FILES = (
    "test_docs_experiments.py",
    "test_docs.py",
    "test_ddp.py",
    "test_sharding.py",
    "test_signals.py",
    "test_predict.py",
    "test_resume.py",
    "test_configs.py",
    "test_depthcrafter.py",
    "test_lean_checkpoints.py",
    "test_live.py",
    "test_benchmark_matrix.py",
    "test_paper_benchmarks.py",
    "test_training_mixtures.py",
    "test_demo.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty working directory so that runs/ and checkpoints land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the suite leaves the checkout as it found it ---------------------------------------------------
def pytest_sessionstart(session):
    from checkout import changed_paths

    if hasattr(session.config, "workerinput"):
        return  # the controller process checks the checkout for the whole run
    session.config._vdf_checkout_before = changed_paths(ROOT)


def pytest_sessionfinish(session, exitstatus):
    from checkout import changed_paths

    before = getattr(session.config, "_vdf_checkout_before", None)
    after = changed_paths(ROOT) if before is not None else None
    written = sorted(after - before) if after is not None else []
    session.config._vdf_checkout_written = written
    if written:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = getattr(config, "_vdf_checkout_written", [])
    if written:
        terminalreporter.section("the tests wrote into the checkout", red=True)
        for path in written[:20]:
            terminalreporter.write_line(f"  {path}")
        terminalreporter.write_line("every test must work in a temporary folder (the in_tmp_cwd fixture, tmp_path)")
