"""vdf.io's small pieces: atomic files, the run manifest, the one video-codec choice, the package's imports."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vdf.io import codecs
from vdf.io.atomic import atomic_path, tmp_base, tmp_name, write_json_atomic
from vdf.io.manifest import RUN_MANIFEST_NAME, RunManifest


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- atomic files


def test_tmp_names_are_hidden_per_process_and_map_back():
    assert tmp_name("clip.npz", pid=12) == ".clip.npz.tmp-12"
    assert tmp_name("clip.npz") == f".clip.npz.tmp-{os.getpid()}"
    assert tmp_base(".clip.npz.tmp-12") == "clip.npz"
    for name in ("clip.npz", ".clip.npz", ".clip.npz.tmp-abc", "clip.npz.tmp-12"):
        assert tmp_base(name) is None


def test_atomic_path_moves_into_place_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.bin.tmp-")
        tmp.write_bytes(b"first")
        assert not target.exists()  # nothing is visible before the block ends
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError, match="crashed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crashed")
    assert target.read_bytes() == b"first" and listing(tmp_path) == ["a.bin"]


def test_write_json_atomic(tmp_path):
    path = write_json_atomic(
        tmp_path / "sub" / "a.json",
        {
            "p": Path("/x"),
            "n": np.float32(1.5),
            "a": np.arange(3),
            "t": torch.tensor([1, 2]),
            "nan": float("nan"),
            "tuple": (1, 2),
        },
    )
    assert json.loads(path.read_text()) == {
        "p": "/x",
        "n": 1.5,
        "a": [0, 1, 2],
        "t": [1, 2],
        "nan": None,
        "tuple": [1, 2],
    }
    assert listing(tmp_path / "sub") == ["a.json"]
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "sub" / "a.json", {"bad": _Unserialisable()})
    assert json.loads(path.read_text())["p"] == "/x"  # the old file survives a failed write
    assert listing(tmp_path / "sub") == ["a.json"]


class _Unserialisable:
    def __str__(self):
        raise TypeError("cannot be written")


def test_run_manifest_records_and_resumes(tmp_path):
    run = RunManifest(tmp_path, {"model": "dav2", "strategy": "per_frame"})
    run.add_result("a", "ok", {"frames": 10, "timing": {"total_s": 2.0}})
    run.add_result("b", "failed", {"error": "cannot decode"})
    data = json.loads((tmp_path / RUN_MANIFEST_NAME).read_text())  # autosaved
    assert data["model"] == "dav2" and data["counts"] == {"ok": 1, "failed": 1, "skipped": 0}
    assert [(v["name"], v["status"]) for v in data["videos"]] == [("a", "ok"), ("b", "failed")]
    assert data["videos"][1]["error"] == "cannot decode"
    with pytest.raises(ValueError, match="status"):
        run.add_result("c", "done")

    resumed = RunManifest(tmp_path, {"model": "dav2"})
    resumed.add_result("a", "skipped", {"reason": "complete"})
    resumed.add_result("b", "ok")
    data = json.loads(resumed.save().read_text())
    assert data["counts"] == {"ok": 1, "failed": 0, "skipped": 1}
    assert {v["name"]: v["status"] for v in data["videos"]} == {"a": "skipped", "b": "ok"}
    assert "error" not in data["videos"][-1]
    assert RunManifest(tmp_path, resume=False).videos == {}
    assert listing(tmp_path) == [RUN_MANIFEST_NAME]


# --------------------------------------------------------------------------- codecs


def test_video_codec_prefers_libx264_and_falls_back_to_mpeg4(monkeypatch):
    monkeypatch.setattr(codecs, "encoder_available", lambda codec: codec == "mpeg4")
    assert codecs.video_codec() == "mpeg4"
    monkeypatch.setattr(codecs, "encoder_available", lambda codec: False)
    with pytest.raises(RuntimeError, match="libx264, mpeg4"):
        codecs.video_codec()
    monkeypatch.undo()
    assert codecs.video_codec() == ("libx264" if codecs.encoder_available("libx264") else "mpeg4")
    assert not codecs.encoder_available("no_such_encoder")


@pytest.mark.parametrize("codec", ["mpeg4", None])
def test_write_mp4_pads_odd_sizes_and_keeps_every_frame(tmp_path, codec):
    frames = [np.full((5, 7, 3), 40 * t, np.uint8) for t in range(4)]
    ntsc = 30000 / 1001  # 29.97002997...: the stream gets the exact fraction
    details = codecs.write_mp4(tmp_path / "v.mp4", iter(frames), 5, 7, ntsc, codec)
    assert details == {"codec": codec or codecs.video_codec(), "height": 6, "width": 8}
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == codecs.video_rate(ntsc) == Fraction(30000, 1001)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 4 and decoded[0].shape == (6, 8, 3)
    assert [int(round(d.mean())) for d in decoded] == pytest.approx([0, 40, 80, 120], abs=3)


# --------------------------------------------------------------------------- layering


def test_the_io_package_imports_no_lightning_and_no_other_part_of_vdf():
    # A fresh interpreter: this one has imported everything already.
    code = (
        "import sys, vdf.io; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning') "
        "or (m.startswith('vdf.') and not m.startswith('vdf.io'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
