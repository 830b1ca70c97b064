"""Every `vdf` command and Python example in the docs and the README runs, in tiny mode, in the order written.

``python -m vdf.<module> ...`` helper lines (e.g. writing demo videos) run too, in-process. Python
blocks of pages marked ``<!-- docs test: run the python blocks -->`` run in one namespace per page, with `vdf.load` given each config's tiny overlay as the
commands are; a block whose first line is ``# file: NAME`` (Python or YAML) is written to NAME in
the page's folder instead, which is on the import path (as ``python -m vdf`` puts it).
"""

import glob
import os
import re
import runpy
import shlex
import sys

import pytest

from vdf.cli import TOOLS, main, run, tiny_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = (
    sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    + sorted(glob.glob(os.path.join(ROOT, "experiments", "**", "*.md"), recursive=True))
    + [os.path.join(ROOT, "README.md")]
)
FAST = {
    "fit": [
        "--trainer.max_epochs",
        "1",
        "--trainer.max_steps",
        "-1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ],
    "validate": ["--trainer.limit_val_batches", "1"],
    "test": ["--trainer.limit_test_batches", "1"],
    # Tools: the experiment runner in tiny mode into the temporary folder (never over the
    # committed results); bench in tiny mode (each recipe with its tiny overlay) at a small size.
    "experiment": ["--tiny", "--output", "experiment_out"],
    "bench": [
        "--tiny",
        "--height",
        "28",
        "--width",
        "42",
        "--frames",
        "4",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--no_bf16",
        "--no_compile",
        "--no_isolate",
    ],
}


#: A page whose Python blocks are examples to run, not excerpts, says so with this comment.
PYTHON_MARK = "<!-- docs test: run the python blocks -->"


def steps(page: str) -> list[tuple[str, str]]:
    """A page's runnable steps in order: ``("command", line)`` for the `vdf ...` / `python -m vdf ...`
    lines of bash blocks (after `&&` too), ``("python", code)`` for Python blocks and
    ``("file", block)`` for blocks that start with ``# file: NAME``."""
    text = open(page).read()
    runs_python = PYTHON_MARK in text
    out = []
    for lang, block in re.findall(r"```(bash|python|yaml)\n(.*?)```", text, flags=re.S):
        if lang != "bash" and not runs_python:
            continue
        if block.startswith("# file: "):
            out.append(("file", block))
        elif lang == "python":
            out.append(("python", block))
        elif lang == "bash":
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                for part in line.split("&&"):
                    part = part.strip()
                    if part.startswith("vdf ") or part.startswith("python -m vdf"):
                        out.append(("command", part))
    return out


def commands(page: str) -> list[str]:
    """The `vdf ...` / `python -m vdf ...` lines of a page's bash blocks (after `&&` too)."""
    return [text for kind, text in steps(page) if kind == "command"]


def tiny_args(command: str) -> list[str]:
    """The command's arguments in tiny mode: paths made absolute, and each recipe's tiny overlay
    (``configs/tiny/<family>.yaml``) added after its configs (`vdf.cli.tiny_configs`)."""
    args = shlex.split(command)
    args = args[3:] if args[0] == "python" else args[1:]
    for i, arg in enumerate(args):
        if arg.startswith(("experiments/", "configs/")):  # joined recipes (vdf bench): a+b
            args[i] = "+".join(os.path.join(ROOT, part) for part in arg.split("+"))
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    if configs:
        first = args.index("--config")
        rest = [a for i, a in enumerate(args) if not (a == "--config" or (i > 0 and args[i - 1] == "--config"))]
        options = [x for c in tiny_configs(configs) for x in ("--config", c)]
        args = rest[:first] + options + rest[first:]
    return args + FAST.get(args[0], [])


PAGES_WITH_COMMANDS = [p for p in PAGES if any(kind != "file" for kind, _ in steps(p))]


def test_the_docs_have_runnable_commands():
    assert any(p.endswith("quickstart.md") for p in PAGES_WITH_COMMANDS)


def runs_experiments(page: str) -> bool:
    """Whether the page runs `vdf experiment` grids (those pages are tested in test_docs_experiments.py,
    which shares the trained cells between them; the suite's parallel workers take a file each)."""
    return any(kind == "command" and text.split()[1:2] == ["experiment"] for kind, text in steps(page))


@pytest.fixture(scope="module")
def experiment_outputs(tmp_path_factory):
    """One tiny-mode output folder per grid for the whole module: the runner resumes completed
    cells, so a grid that several pages run (experiments.md and its recipe page) trains once."""
    return tmp_path_factory.mktemp("experiment_outputs")


@pytest.mark.parametrize(
    "page", [p for p in PAGES_WITH_COMMANDS if not runs_experiments(p)], ids=lambda p: os.path.relpath(p, ROOT)
)
def test_page_commands_run_in_tiny_mode(page, in_tmp_cwd, experiment_outputs, monkeypatch):
    run_page(page, in_tmp_cwd, experiment_outputs, monkeypatch)


def run_page(page: str, in_tmp_cwd, experiment_outputs, monkeypatch) -> None:
    """Run a page's steps in order in ``in_tmp_cwd`` (see the module docstring)."""
    import vdf.api

    real_load = vdf.api.load

    def tiny_load(config, *args, **kwargs):
        configs = [config] if isinstance(config, (str, os.PathLike)) else list(config)
        configs = [os.path.join(ROOT, c) if str(c).startswith("configs/") else c for c in configs]
        return real_load(tiny_configs([str(c) for c in configs]), *args, **kwargs)

    monkeypatch.setattr(vdf.api, "load", tiny_load)
    monkeypatch.syspath_prepend(str(in_tmp_cwd))
    before = set(sys.modules)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for kind, text in steps(page):
            if kind == "file":
                name, _, body = text.partition("\n")
                (in_tmp_cwd / name.removeprefix("# file: ").strip()).write_text(body)
            elif kind == "python":
                exec(compile(text, f"{os.path.relpath(page, ROOT)} (python block)", "exec"), namespace)
            else:
                _run_command(text, experiment_outputs)
    finally:
        # The page's own modules (my_depth, ...) must not leak into the next page.
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            if str(getattr(module, "__file__", "") or "").startswith(str(in_tmp_cwd)):
                del sys.modules[name]


def _run_command(command: str, experiment_outputs) -> None:
    """One `vdf ...` / `python -m vdf...` line, in-process, in tiny mode."""
    if command.startswith("python -m vdf."):
        module, *argv = shlex.split(command)[2:]
        old_argv = sys.argv
        sys.argv = [module, *argv]
        try:
            runpy.run_module(module, run_name="__main__")
        finally:
            sys.argv = old_argv
        return
    args = tiny_args(command)
    if args[0] == "experiment":
        grid = os.path.basename(os.path.normpath(args[1]))
        args[args.index("experiment_out")] = str(experiment_outputs / grid)
    if args[0] in TOOLS:
        run(args)
        return
    try:
        main(args)
    except SystemExit as exit_info:  # --print_config exits after printing
        assert exit_info.code in (0, None), f"{command!r} exited with {exit_info.code}"
        assert "--print_config" in args, f"{command!r} exited early"
