"""The import arrow of DESIGN.md, checked in fresh interpreters: the pure-torch layers import neither
Lightning nor the tasks; strategies import no task and no data module; predictors and `vdf.load`
run without Lightning."""

import subprocess
import sys

# Modules below the tasks: none may pull in Lightning or vdf.tasks.
PURE = [
    "vdf.models",
    "vdf.models.svd",
    "vdf.models.dav",
    "vdf.models.dav2",
    "vdf.models.flashdepth",
    "vdf.models.weights",
    "vdf.diffusion",
    "vdf.metrics",
    "vdf.io",
    "vdf.data.readers",
    "vdf.data.datasets.frames",
    "vdf.data.datasets.sintel",
    "vdf.data.datasets.synthetic",
    "vdf.inference",
    "vdf.predictors",
    "vdf.api",
]


def test_lower_layers_import_neither_lightning_nor_tasks_nor_the_data_module():
    # One fresh interpreter imports every module below the tasks; if none of them is followed by
    # Lightning, vdf.tasks or the datamodule, none of them imports it.
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    assert {"vdf.models.svd", "vdf.predictors", "vdf.inference"} <= loaded
    forbidden = {
        m
        for m in loaded
        if m.split(".")[0] in ("lightning", "pytorch_lightning")
        or m.startswith(("vdf.tasks", "vdf.callbacks", "vdf.data.datamodule", "vdf.cli"))
    }
    assert not forbidden, sorted(forbidden)[:10]
