import numpy as np
import pytest
import torch

from vdf.data.datasets.episodes import EpisodeFolder
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.data.types import ClipRequest
from vdf.io import write_episodes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    world = SyntheticWorld(num_episodes=2, num_frames=6, height=32, width=48, seed=7)
    write_episodes(world, root)
    return root, world


def test_episode_folder_reads_what_the_synthetic_world_wrote(folder):
    root, world = folder
    ds = EpisodeFolder(str(root))
    assert len(ds) == 2 and ds.sequence_length(1) == 6 and ds.frame_size(0) == (32, 48)
    sample = ds[ClipRequest(1, (1, 3, 4))]
    truth = world.load(1, [1, 3, 4])
    assert sample["frame_index"].tolist() == [1, 3, 4]
    assert torch.equal(sample["depth"], truth["depth"]) and torch.equal(sample["valid"], truth["valid"])
    assert torch.allclose(sample["intrinsics"], truth["intrinsics"])
    assert torch.allclose(sample["cam_to_world"], truth["cam_to_world"])
    assert sample["video"].shape == (3, 3, 32, 48)
    # Lossy H.264 with 4:2:0 chroma on small textured frames: close on average and unbiased.
    diff = sample["video"] - truth["video"]
    assert diff.abs().mean() < 0.08
    assert diff.mean(dim=(0, 2, 3)).abs().max() < 0.01
    assert sample["meta"]["sequence"] == "episode_00001" and sample["meta"]["paths"][0].endswith(".mp4")


def test_missing_root_empty_root_and_missing_ground_truth_are_named(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist.*write_episodes"):
        EpisodeFolder(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no <name>.mp4"):
        EpisodeFolder(str(tmp_path))
    root, _ = folder
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "clip.mp4").write_bytes((root / "episode_00000.mp4").read_bytes())
    with pytest.raises(FileNotFoundError, match="clip_gt.npz"):
        EpisodeFolder(str(lonely))


def test_corrupt_ground_truth_and_short_video_are_clear_errors(tmp_path, folder):
    root, _ = folder
    (tmp_path / "a.mp4").write_bytes((root / "episode_00000.mp4").read_bytes())
    (tmp_path / "a_gt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read ground truth .*a_gt.npz"):
        EpisodeFolder(str(tmp_path))
    with np.load(root / "episode_00000_gt.npz") as gt:
        longer = {k: np.concatenate([gt[k], gt[k]]) for k in gt.files}
    np.savez(tmp_path / "a_gt.npz", **longer)
    ds = EpisodeFolder(str(tmp_path))
    assert ds.sequence_length(0) == 12
    with pytest.raises(ValueError, match="fewer frames than its ground truth"):
        ds.load(0, [0, 11])


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

HOSTILE = st.one_of(
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(-float("inf")),
    st.just(0.0),
    st.just(-1.0),
    st.floats(1e-30, 1e-6),
    st.floats(1e6, 1e30),
    st.floats(0.1, 100.0),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=arrays(np.float32, (3, 32, 48), elements=HOSTILE), stored_valid=st.booleans())
def test_hostile_depth_values_never_reach_a_sample_as_valid(folder, tmp_path_factory, depth, stored_valid):
    root, _ = folder
    work = tmp_path_factory.mktemp("hostile")
    (work / "a.mp4").write_bytes((root / "episode_00000.mp4").read_bytes())
    np.savez(
        work / "a_gt.npz",
        depth=depth,
        valid=np.full(depth.shape, stored_valid),
        frame_index=np.arange(3, dtype=np.int64),
    )
    sample = EpisodeFolder(str(work)).load(0, [0, 1, 2])
    d, v = sample["depth"][:, 0].numpy(), sample["valid"][:, 0].numpy()
    assert np.isfinite(d).all() and (d >= 0).all()
    assert not (d[~v]).any(), "unknown depth is 0"
    expected = stored_valid & np.isfinite(depth) & (depth > 0)
    assert np.array_equal(v, expected)
    assert np.array_equal(d[v], depth[v])
