"""vdf.io.episodes: depth-annotated videos written as ``<name>.mp4`` + ``<name>_gt.npz``."""

import av
import numpy as np
import pytest
import torch

from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io import codecs
from vdf.io.episodes import write_episodes


@pytest.mark.parametrize("size, codec", [((48, 64), None), ((33, 47), None), ((32, 48), "mpeg4")])
def test_write_episodes_round_trip(tmp_path, monkeypatch, size, codec):
    if codec is not None:  # the fallback for FFmpeg builds without libx264
        monkeypatch.setattr(codecs, "encoder_available", lambda name: name == codec)
    h, w = size
    ds = SyntheticWorld(num_episodes=3, num_frames=6, height=h, width=w, seed=4)
    paths = write_episodes(ds, tmp_path, indices=[0, 2], fps=10)
    assert [p.name for p in paths] == ["episode_00000.mp4", "episode_00002.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "episode_00000.mp4",
        "episode_00000_gt.npz",
        "episode_00002.mp4",
        "episode_00002_gt.npz",
    ]
    he, we = h - h % 2, w - w % 2  # yuv420p: odd last row/column cropped
    for index, path in zip([0, 2], paths):
        sample = ds[index]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == ("h264" if codec is None else codec)
            assert stream.codec_context.pix_fmt == "yuv420p"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == 6 and frames[0].shape == (he, we, 3)
        decoded = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
        err = (decoded - sample["video"][:, :, :he, :we]).abs().mean()
        assert err < 0.04, err
        gt = np.load(tmp_path / f"episode_{index:05d}_gt.npz")
        assert gt["depth"].shape == (6, he, we) and gt["depth"].dtype == np.float32
        np.testing.assert_array_equal(gt["depth"], sample["depth"][:, 0, :he, :we].numpy())
        np.testing.assert_array_equal(gt["valid"], sample["valid"][:, 0, :he, :we].numpy())
        np.testing.assert_array_equal(gt["intrinsics"], sample["intrinsics"].numpy())
        np.testing.assert_array_equal(gt["cam_to_world"], sample["cam_to_world"].numpy())
        np.testing.assert_array_equal(gt["frame_index"], np.arange(6))


def test_a_failure_part_way_leaves_no_file(tmp_path, monkeypatch):
    ds = SyntheticWorld(num_episodes=1, num_frames=40, height=16, width=16, seed=1)
    load = ds.load

    def failing(index, frames):  # the second chunk of 32 frames cannot be rendered
        if min(frames) >= 32:
            raise RuntimeError("render failed")
        return load(index, frames)

    monkeypatch.setattr(ds, "load", failing)
    with pytest.raises(RuntimeError, match="render failed"):
        write_episodes(ds, tmp_path)
    assert list(tmp_path.iterdir()) == []
