"""`vdf demo`: the page's model and action without a browser, then the served page in headless
Chromium (Playwright): load, upload a video, see the side-by-side result, download the npz.

The browser part needs Gradio, Playwright and a Chromium binary (``.ci/run`` installs Debian's); without
them it is skipped with the reason. ``VDF_DEMO_SCREENSHOT=/tmp/demo.png`` also saves the page's
screenshot there (copy it to docs/assets/demo/demo.png for the docs: the suite itself never writes
into the checkout).
"""

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import pytest

from vdf.cli import TOOLS
from vdf.demo import DepthDemo, build_app, describe_strategy, launch, main, strategy_choices
from vdf.inference import IndependentWindows, PerFrame
from vdf.io import VideoSource, write_episodes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DAV2 = ["configs/dav2.yaml", "configs/tiny/dav2.yaml"]
FRAMES, H, W = 5, 32, 48


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # Built from the checkout's root with the configs' relative paths, as `vdf demo` is run (the page shows them).
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return DepthDemo(TINY_DAV2, device="cpu", output_dir=tmp_path_factory.mktemp("demo_runs"))
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=1, num_frames=FRAMES, height=H, width=W, seed=0)
    (path,) = write_episodes(world, tmp_path_factory.mktemp("clip"), fps=10)
    return str(path)


def test_strategy_list_is_the_configs_own_then_those_the_model_supports(demo):
    assert demo.labels == ["PerFrame(batch_size=8): the config's", "IndependentWindows()"]
    assert describe_strategy(IndependentWindows(window=8, overlap=2)) == "IndependentWindows(window=8, overlap=2)"

    recurrent = SimpleNamespace(strategy=PerFrame(), stream_step=lambda frame, state: None)  # FlashDepth-like
    assert [c.label.split("(")[0] for c in strategy_choices(recurrent)] == [
        "PerFrame",
        "IndependentWindows",
        "Streaming",
    ]


def test_run_writes_the_outputs_with_vdfs_writers(demo, clip):
    result = demo.run(clip, "IndependentWindows()")
    assert "5 frames at 48×32" in result.message and "IndependentWindows()" in result.message
    side = VideoSource(result.side_by_side).probe()
    assert (side.out_width, side.out_height) == (2 * W, H), "RGB | depth"
    npz, exr_zip, depth_video = result.downloads
    assert np.load(npz)["disparity"].shape == (FRAMES, H, W)
    with zipfile.ZipFile(exr_zip) as zf:
        assert sorted(zf.namelist()) == [f"{i:06d}.exr" for i in range(FRAMES)]
    assert depth_video.endswith("_depth.mp4") and VideoSource(depth_video).probe().out_width == W
    assert demo.random_weights, "a tiny config names no weights: the page says so"


def test_bad_input_is_a_message(demo, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="not a video"):
        demo.run(str(text))
    with pytest.raises(ValueError, match="Upload a video first"):
        demo.run(None)
    with pytest.raises(ValueError, match="unknown strategy"):
        demo.run(str(text), "Nonsense()")


def test_cli_is_a_tool_and_says_what_is_missing(tmp_path):
    assert TOOLS["demo"] == "vdf.demo"
    # Without Gradio the command says how to install it, before loading any model.
    error, message = (FileNotFoundError, "does not exist") if find_spec("gradio") else (ValueError, "needs Gradio")
    with pytest.raises(error, match=message):
        main(["--config", str(tmp_path / "missing.yaml")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser():
    """Playwright's Chromium driver on the system's Chromium, or a skip saying what is missing."""
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install -e '.[demo]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if binary is None:
        pytest.skip("no Chromium binary on PATH (apt-get install -y chromium): the page is not tested in a browser")
    return sync_api, binary


def test_page_in_a_headless_browser(demo, clip, in_tmp_cwd):
    sync_api, binary = _browser()
    bad = in_tmp_cwd / "notes.mp4"
    bad.write_text("not a video")
    app = build_app(demo)
    port = _free_port()
    launch(app, demo, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 680})
                page.set_default_timeout(30_000)

                # A file that is not a video: a message on the page.
                page.goto(url)
                page.locator("#vdf-video input[type=file]").set_input_files(str(bad))
                page.locator("#vdf-run").click()
                page.get_by_text("cannot be read as a video").wait_for()

                # A video: the side-by-side result plays, and the npz downloads.
                page.goto(url)
                page.locator("#vdf-video input[type=file]").set_input_files(clip)
                page.locator("#vdf-video video").wait_for()
                page.locator("#vdf-strategy input").click()
                page.get_by_role("option", name="IndependentWindows()").click()
                page.locator("#vdf-run").click()
                page.get_by_text("5 frames at 48×32, IndependentWindows()").wait_for()
                result = page.locator("#vdf-result video")
                result.wait_for()
                page.wait_for_function(
                    "() => { const v = document.querySelector('#vdf-result video'); return v && v.readyState >= 1; }"
                )
                assert page.evaluate("document.querySelector('#vdf-result video').videoWidth") == 2 * W
                with page.expect_download() as download:
                    page.locator('#vdf-downloads a[download$=".npz"]').click()
                assert download.value.suggested_filename == "episode_00000.npz"
                assert np.load(download.value.path())["disparity"].shape == (FRAMES, H, W)

                shot = in_tmp_cwd / "demo.png"
                page.screenshot(path=str(shot))
                if os.environ.get("VDF_DEMO_SCREENSHOT"):  # the docs' picture, in 256 colours
                    from PIL import Image

                    Image.open(shot).convert("RGB").quantize(256).save(os.environ["VDF_DEMO_SCREENSHOT"], optimize=True)
            finally:
                browser.close()
    finally:
        app.close()


def test_the_demo_module_imports_neither_lightning_nor_gradio_until_asked():
    code = "import sys, vdf.demo; print(sorted(m.split('.')[0] for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lightning" not in out.stdout and "gradio" not in out.stdout
