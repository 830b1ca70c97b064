"""`vdf bench`: side-by-side frames/s and peak memory of tiny configs, and its errors."""

import json
import os

import pytest

from vdf.bench import BenchSettings, _current_rss, _reset_peak_rss, _status_kb, build_model, main
from vdf.cli import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAV2 = os.path.join(ROOT, "configs", "dav2.yaml")
# A recipe and its overlay, joined by "+": FlashDepth-S.
FLASH_S = "+".join(os.path.join(ROOT, "configs", p) for p in ("flashdepth.yaml", "flashdepth/s.yaml"))
SMALL = ["--height", "28", "--width", "42", "--frames", "5", "--warmup", "2", "--repeats", "2", "--tiny"]


def test_side_by_side_in_process_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = main([DAV2, FLASH_S, *SMALL, "--no_isolate", "--video", "random", "--output", str(out)])
    data = json.loads(out.read_text())
    assert data["results"] == report["results"]
    assert data["settings"]["frames"] == 5 and data["settings"]["height"] == 28
    first, second = data["results"]
    for r in data["results"]:
        assert r["frames_counted"] == [5, 5], "every requested frame comes out, every repeat"
        assert len(r["seconds"]) == 2 and r["fps"] > 0 and r["params_m"] > 0
        assert r["peak_memory_mb"] >= 0 and r["peak_total_mb"] > 0 and r["memory_kind"]
    assert first["fps_ratio"] == 1.0 and first["name"] == "dav2"
    assert first["strategy"] == "PerFrame" and second["strategy"] == "Streaming"
    assert second["fps_ratio"] == pytest.approx(second["fps"] / first["fps"])
    table = capsys.readouterr().out
    assert "| dav2 | PerFrame |" in table and "| flashdepth_s | Streaming |" in table
    assert "tiny" in data["results"][1]["config"], "--tiny adds the family's tiny overlay"


def test_strategy_override_per_config(tmp_path):
    window = "{class_path: vdf.inference.IndependentWindows, init_args: {window: 3, overlap: 1}}"
    report = main([DAV2, FLASH_S, *SMALL, "--no_isolate", "--video", "random", "--strategy", f'[default, "{window}"]'])
    first, second = report["results"]
    assert first["strategy"] == "PerFrame"
    assert second["strategy"] == "IndependentWindows" and second["window"] == 3
    assert second["frames_counted"] == [5, 5]
    assert second["name"] == "flashdepth_s + IndependentWindows"


def test_isolated_workers_through_the_vdf_command(tmp_path):
    out = tmp_path / "b.json"
    report = run(["bench", DAV2, *SMALL, "--output", str(out)])
    (r,) = report["results"]
    assert report["isolate"] is True and r["frames_counted"] == [5, 5] and r["fps_ratio"] == 1.0
    assert "in-process" not in r["memory_kind"]
    assert json.loads(out.read_text())["results"][0]["fps"] == r["fps"]


def test_missing_config_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        main([DAV2, missing, *SMALL])


def test_compile_on_cpu_is_refused():
    with pytest.raises(ValueError, match="--compile.*GPU"):
        main([DAV2, *SMALL, "--compile"])


def test_strategy_count_must_match():
    with pytest.raises(ValueError, match="one --strategy"):
        main([DAV2, FLASH_S, DAV2, *SMALL, "--strategy", "[vdf.inference.PerFrame, vdf.inference.PerFrame]"])


def test_settings_defaults_are_sane():
    s = BenchSettings()
    assert s.device == "cpu" and not s.bf16 and not s.compile and s.repeats >= 1


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc only")
def test_peak_rss_counter_resets():
    assert _current_rss() > 0
    if _reset_peak_rss():
        assert _status_kb("VmHWM") * 1024 <= _current_rss() * 1.05 + 4096


def test_weight_files_are_ignored_by_default():
    import yaml

    from vdf.bench import weight_file_overrides

    flag, extra = weight_file_overrides([os.path.join(ROOT, "configs", "flashdepth.yaml")])
    assert flag == "--config"
    nulls = yaml.safe_load(extra)["model"]["init_args"]["predictor"]["init_args"]
    assert nulls["net"]["init_args"] == {"student_weights": None, "teacher_weights": None}
    assert "gradient_checkpointing" not in nulls, "flags are not weight files"
    model = build_model(
        [
            "--config",
            os.path.join(ROOT, "configs", "dav2.yaml"),
            *weight_file_overrides([os.path.join(ROOT, "configs", "dav2.yaml")]),
        ]
    )
    assert type(model).__name__ == "FrameDepthTask", "the paper-scale config builds without its weight file"
