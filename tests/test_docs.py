"""Every `vdf` command in the docs and the README runs, in tiny mode, in the order written.

``python -m vdf.<module> ...`` helper lines (e.g. writing demo videos) run too, in-process.
"""

import glob
import os
import re
import runpy
import shlex
import sys

import pytest

from vdf.cli import TOOLS, main, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = (
    sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    + sorted(glob.glob(os.path.join(ROOT, "experiments", "**", "*.md"), recursive=True))
    + [os.path.join(ROOT, "README.md")]
)
FAST = {
    "fit": ["--trainer.max_epochs", "1", "--trainer.max_steps", "-1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1"],
    "validate": ["--trainer.limit_val_batches", "1"],
    "test": ["--trainer.limit_test_batches", "1"],
    # Tools: the experiment runner in tiny mode into the temporary folder (never over the
    # committed results); bench at a small size.
    "experiment": ["--tiny", "--output", "experiment_out"],
    "bench": ["--height", "28", "--width", "42", "--frames", "4", "--warmup", "1", "--repeats", "1", "--device", "cpu",
              "--no_bf16", "--no_compile", "--no_isolate"],
}


def commands(page: str) -> list[str]:
    """The `vdf ...` / `python -m vdf ...` lines of a page's bash blocks (after `&&` too)."""
    text = open(page).read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("vdf ") or part.startswith("python -m vdf"):
                    out.append(part)
    return out


def tiny_args(command: str) -> list[str]:
    args = shlex.split(command)
    args = args[3:] if args[0] == "python" else args[1:]
    for i, arg in enumerate(args):
        if arg.startswith("experiments/"):
            args[i] = os.path.join(ROOT, arg)
        elif arg.startswith("configs/"):
            tiny = os.path.join("configs", "tiny", os.path.basename(arg))
            use_tiny = not arg.startswith("configs/tiny/") and os.path.isfile(os.path.join(ROOT, tiny))
            args[i] = os.path.join(ROOT, tiny if use_tiny else arg)
    return args + FAST.get(args[0], [])


PAGES_WITH_COMMANDS = [p for p in PAGES if commands(p)]


def test_the_docs_have_runnable_commands():
    assert any(p.endswith("quickstart.md") for p in PAGES_WITH_COMMANDS)


@pytest.fixture(scope="module")
def experiment_outputs(tmp_path_factory):
    """One tiny-mode output folder per grid for the whole module: the runner resumes completed
    cells, so a grid that several pages run (experiments.md and its recipe page) trains once."""
    return tmp_path_factory.mktemp("experiment_outputs")


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: os.path.relpath(p, ROOT))
def test_page_commands_run_in_tiny_mode(page, in_tmp_cwd, capsys, experiment_outputs):
    for command in commands(page):
        if command.startswith("python -m vdf."):
            module, *argv = shlex.split(command)[2:]
            old_argv = sys.argv
            sys.argv = [module, *argv]
            try:
                runpy.run_module(module, run_name="__main__")
            finally:
                sys.argv = old_argv
            continue
        args = tiny_args(command)
        if args[0] == "experiment":
            grid = os.path.basename(os.path.normpath(args[1]))
            args[args.index("experiment_out")] = str(experiment_outputs / grid)
        if args[0] in TOOLS:
            run(args)
            continue
        try:
            main(args)
        except SystemExit as exit_info:  # --print_config exits after printing
            assert exit_info.code in (0, None), f"{command!r} exited with {exit_info.code}"
            assert "--print_config" in args, f"{command!r} exited early"
