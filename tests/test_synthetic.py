"""The synthetic world: contract, determinism and exact geometry (its mp4/npz export: test_io_episodes.py)."""

import math

import pytest
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.datasets.synthetic import (
    FLOOR_ID,
    NUM_ROOM_FACES,
    SYNTHETIC_MAX_DEPTH,
    SyntheticWorld,
)
from vdf.data.types import ClipRequest

KEYS = ("video", "depth", "valid", "frame_index", "intrinsics", "cam_to_world")


def _pixel_grid(h, w):
    rows, cols = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return u, v


def unproject(sample, t):
    """World points (H,W,3) float64 of frame t from depth, K and cam_to_world alone."""
    k = sample["intrinsics"][t].double()
    c2w = sample["cam_to_world"][t].double()
    depth = sample["depth"][t, 0].double()
    u, v = _pixel_grid(*depth.shape)
    x = (u - k[0, 2]) / k[0, 0] * depth
    y = (v - k[1, 2]) / k[1, 1] * depth
    cam = torch.stack([x, y, depth], dim=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project(points, k, c2w):
    """Pixel coordinates (…,2) and depth (…) of world points in a camera (float64)."""
    k, c2w = k.double(), c2w.double()
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = cam[..., 2]
    u = k[0, 0] * cam[..., 0] / z + k[0, 2]
    v = k[1, 1] * cam[..., 1] / z + k[1, 2]
    return torch.stack([u, v], dim=-1), z


def surface_residual(scene, surface, frame, points):
    """Signed distance-like residual of ``points`` (N,3) to the implicit surface ``surface`` at ``frame``,
    written from the documented scene geometry (floor y=0, ceiling y=-height, walls x/z = ±half)."""
    if surface < NUM_ROOM_FACES:
        axis, positive = divmod(surface, 2)
        planes = [(-scene.half_x, scene.half_x), (-scene.room_height, 0.0), (-scene.half_z, scene.half_z)]
        return points[:, axis] - planes[axis][positive]
    obj = scene.objects[surface - NUM_ROOM_FACES]
    m = scene.object_to_world(surface - NUM_ROOM_FACES, frame).double()
    q = (points - m[:3, 3]) @ m[:3, :3]
    h = torch.tensor(obj.half_extents, dtype=torch.float64)
    if obj.kind == "box":
        return (q.abs() - h).amax(dim=-1)
    if obj.kind == "sphere":
        return q.norm(dim=-1) - h[0]
    assert obj.kind == "cylinder"
    return torch.maximum(q[:, [0, 2]].norm(dim=-1) - h[0], q[:, 1].abs() - h[1])


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("size", [(64, 96), (33, 47), (20, 11)])
def test_sample_keys_shapes_dtypes_and_ranges(size):
    h, w = size
    ds = SyntheticWorld(num_episodes=3, num_frames=5, height=h, width=w, seed=1)
    assert isinstance(ds, VideoDepthDataset) and len(ds) == 3
    assert ds.sequence_length(2) == 5 and ds.frame_size(2) == (h, w)
    s = ds[2]
    assert s["video"].shape == (5, 3, h, w) and s["video"].dtype == torch.float32
    assert s["depth"].shape == (5, 1, h, w) and s["depth"].dtype == torch.float32
    assert s["valid"].shape == (5, 1, h, w) and s["valid"].dtype == torch.bool
    assert s["frame_index"].dtype == torch.int64 and s["frame_index"].tolist() == [0, 1, 2, 3, 4]
    assert s["intrinsics"].shape == (5, 3, 3) and s["intrinsics"].dtype == torch.float32
    assert s["cam_to_world"].shape == (5, 4, 4) and s["cam_to_world"].dtype == torch.float32
    assert s["meta"] == {"dataset": "synthetic_world", "sequence": "episode_00002", "paths": []}
    assert s["video"].min() >= 0.0 and s["video"].max() <= 1.0
    assert s["video"].std() > 0.05  # textured, not a flat colour
    # A closed room: every ray hits something within the documented range.
    assert s["valid"].all()
    assert s["depth"].min() > 0.3 and s["depth"].max() < SYNTHETIC_MAX_DEPTH
    # Pinhole K: square pixels, horizontal fov as configured, principal point at the image centre.
    k = s["intrinsics"][0]
    assert k[0, 0] == pytest.approx((w / 2) / math.tan(math.radians(60.0) / 2), rel=1e-6)
    assert k[1, 1] == k[0, 0] and k[0, 2] == (w - 1) / 2 and k[1, 2] == (h - 1) / 2
    assert torch.equal(s["intrinsics"], k.expand(5, 3, 3))
    # Poses are rigid: orthonormal rotations with determinant +1 and a homogeneous last row.
    r = s["cam_to_world"][:, :3, :3].double()
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(r), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.equal(s["cam_to_world"][:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(5, 4))


def test_sizes_cycle_over_episodes_and_clip_requests_keep_frame_indices():
    ds = SyntheticWorld(num_episodes=5, num_frames=7, sizes=[(16, 24), (9, 13)])
    assert [ds.frame_size(i) for i in range(5)] == [(16, 24), (9, 13), (16, 24), (9, 13), (16, 24)]
    s = ds[ClipRequest(index=3, frames=(1, 4, 6))]
    assert s["video"].shape == (3, 3, 9, 13)
    assert s["frame_index"].tolist() == [1, 4, 6]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(IndexError):
        ds.load(0, [7])


@pytest.mark.parametrize("num_objects, moving", [(0, 2), (1, 1), (12, 4)])
def test_object_counts(num_objects, moving):
    ds = SyntheticWorld(
        num_episodes=2, num_frames=3, height=24, width=36, num_objects=num_objects, moving_objects=moving
    )
    scene = ds.scene(1)
    assert len(scene.objects) == num_objects
    assert sum(o.moving for o in scene.objects) == min(moving, num_objects)
    sample, surface = ds.render(1, range(3))
    assert sample["valid"].all() and surface.max() < NUM_ROOM_FACES + num_objects


def test_frames_beyond_the_default_length_continue_the_trajectory():
    short = SyntheticWorld(num_episodes=1, num_frames=16, height=12, width=18)
    long = SyntheticWorld(num_episodes=1, num_frames=40, height=12, width=18)
    a, b = short[0], long.load(0, range(16))
    assert all(torch.equal(a[k], b[k]) for k in KEYS)
    tail = long.load(0, [39])
    step = (tail["cam_to_world"][0, :3, 3] - long.load(0, [38])["cam_to_world"][0, :3, 3]).norm()
    assert 0 < step < 0.2  # still a smooth path: < 2 m/s at 10 frames per second


# ---------------------------------------------------------------- determinism


def test_same_episode_is_bitwise_identical_for_any_frame_subset():
    ds = SyntheticWorld(num_episodes=4, num_frames=12, height=40, width=60, seed=3)
    full = ds[1]
    again = ds[1]
    assert all(torch.equal(full[k], again[k]) for k in KEYS)
    for frames in ([2, 5, 9], [11], [9, 2, 5], list(range(1, 12, 2))):
        sub = ds.load(1, frames)
        assert sub["frame_index"].tolist() == frames
        for k in KEYS[:3] + KEYS[4:]:
            assert torch.equal(sub[k], full[k][frames]), (frames, k)
    # A fresh instance (as in a dataloader worker) renders the same bits.
    other = SyntheticWorld(num_episodes=4, num_frames=12, height=40, width=60, seed=3).load(1, [2, 5, 9])
    assert torch.equal(other["video"], full["video"][[2, 5, 9]])


def test_screen_space_culling_changes_nothing(monkeypatch):
    """Objects are only cast inside their projected bounding rectangles; casting every pixel
    against every object must give the same bits."""
    import vdf.data.datasets.synthetic as synthetic

    ds = SyntheticWorld(num_episodes=4, num_frames=6, height=36, width=52, seed=9, num_objects=8, moving_objects=3)
    culled = [ds.render(i, range(6)) for i in range(4)]
    monkeypatch.setattr(synthetic, "_screen_rect", lambda oc, radius, k, height, width: (0, height, 0, width))
    for i, (sample, surface) in enumerate(culled):
        full_sample, full_surface = ds.render(i, range(6))
        assert torch.equal(surface, full_surface)
        assert torch.equal(sample["depth"], full_sample["depth"])
        assert torch.equal(sample["video"], full_sample["video"])
    assert any((surface >= NUM_ROOM_FACES).any() for _, surface in culled)


def test_does_not_touch_or_depend_on_the_global_rng():
    ds = SyntheticWorld(num_episodes=2, num_frames=3, height=10, width=14)
    torch.manual_seed(0)
    a = ds[0]
    state = torch.get_rng_state()
    torch.manual_seed(12345)
    b = ds[0]
    assert torch.equal(a["video"], b["video"])
    torch.manual_seed(0)
    ds[0]
    assert torch.equal(torch.get_rng_state(), state)


def test_different_seeds_and_indices_give_different_episodes():
    kw = dict(num_episodes=3, num_frames=3, height=24, width=32)
    a = SyntheticWorld(seed=0, **kw)
    b = SyntheticWorld(seed=1, **kw)
    clips = [a[0], a[1], a[2], b[0], b[1]]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert (clips[i]["depth"] - clips[j]["depth"]).abs().mean() > 0.05
            assert not torch.equal(clips[i]["cam_to_world"], clips[j]["cam_to_world"])


# ---------------------------------------------------------------- geometry


def test_unprojected_pixels_lie_on_the_surfaces_they_hit():
    ds = SyntheticWorld(num_episodes=6, num_frames=10, height=45, width=67, seed=7)
    kinds_seen = set()
    for index in range(6):
        scene = ds.scene(index)
        sample, surface = ds.render(index, [0, 4, 9])
        for t, frame in enumerate([0, 4, 9]):
            points = unproject(sample, t).reshape(-1, 3)
            ids = surface[t, 0].reshape(-1)
            # Every point is inside the room (or on its boundary).
            assert (points[:, 0].abs() <= scene.half_x + 1e-4).all()
            assert (points[:, 2].abs() <= scene.half_z + 1e-4).all()
            assert (points[:, 1] <= 1e-4).all() and (points[:, 1] >= -scene.room_height - 1e-4).all()
            for sid in ids.unique().tolist():
                mask = ids == sid
                res = surface_residual(scene, sid, frame, points[mask])
                assert res.abs().max() < 5e-5, (index, frame, sid, res.abs().max().item())
                if sid >= NUM_ROOM_FACES:
                    kinds_seen.add(scene.objects[sid - NUM_ROOM_FACES].kind)
            # The floor is the plane y = 0 of the world and is seen in every frame.
            floor = points[ids == FLOOR_ID]
            assert len(floor) > 0 and floor[:, 1].abs().max() < 5e-5
            # Independently of the ids: every point is on *some* surface of the scene.
            all_res = torch.stack(
                [surface_residual(scene, s, frame, points).abs() for s in range(NUM_ROOM_FACES + len(scene.objects))]
            )
            assert all_res.amin(dim=0).max() < 5e-5
    assert kinds_seen == {"box", "sphere", "cylinder"}


def test_nothing_lies_between_the_camera_and_the_visible_surface():
    """The hit is the *first* one: points part-way along each pixel ray are outside every object."""
    ds = SyntheticWorld(num_episodes=3, num_frames=4, height=30, width=44, seed=2)
    for index in range(3):
        scene = ds.scene(index)
        sample, _surface = ds.render(index, [1, 3])
        for t, frame in enumerate([1, 3]):
            o = sample["cam_to_world"][t, :3, 3].double()
            points = unproject(sample, t).reshape(-1, 3)
            for frac in (0.25, 0.5, 0.9, 0.995):
                mid = o + frac * (points - o)
                for k in range(len(scene.objects)):
                    assert (surface_residual(scene, NUM_ROOM_FACES + k, frame, mid) > -1e-5).all()


def test_static_geometry_reprojects_consistently_between_frames():
    ds = SyntheticWorld(num_episodes=4, num_frames=12, height=60, width=90, seed=5)
    for index in range(4):
        scene = ds.scene(index)
        sample, surface = ds.render(index, [0, 11])
        static = [
            s
            for s in range(NUM_ROOM_FACES + len(scene.objects))
            if s < NUM_ROOM_FACES or not scene.objects[s - NUM_ROOM_FACES].moving
        ]
        ids_a = surface[0, 0]
        points = unproject(sample, 0)
        uv, z = project(points, sample["intrinsics"][1], sample["cam_to_world"][1])
        ui, vi = uv[..., 0].round().long(), uv[..., 1].round().long()
        inside = (z > 0) & (ui >= 0) & (ui < 90) & (vi >= 0) & (vi < 60)
        inside &= torch.isin(ids_a, torch.tensor(static))
        ui, vi = ui[inside], vi[inside]
        # Compare only where frame 11 sees the same surface (not occluded by something else).
        same = surface[1, 0][vi, ui] == ids_a[inside]
        assert same.float().mean() > 0.8
        depth_b = sample["depth"][1, 0][vi, ui].double()[same]
        rel = (depth_b - z[inside][same]).abs() / z[inside][same]
        assert rel.median() < 0.005 and (rel < 0.03).float().mean() > 0.95, (index, rel.median())
        # Texture is attached to the surfaces and shading is view-independent (Lambertian):
        # a static point keeps its colour.
        col_a = sample["video"][0].permute(1, 2, 0)[inside][same]
        col_b = sample["video"][1].permute(1, 2, 0)[vi, ui][same]
        assert (col_a - col_b).abs().median() < 0.03


def test_colour_edges_are_aligned_with_surface_boundaries():
    """Video and depth are pixel-aligned: colour jumps where the hit surface changes (different
    texture and lighting), and a one-pixel misalignment destroys that."""
    ds = SyntheticWorld(num_episodes=6, num_frames=4, height=48, width=72, seed=0)
    for index in range(6):
        sample, surface = ds.render(index, range(4))
        boundary = surface[:, 0, :, 1:] != surface[:, 0, :, :-1]
        ratios = []
        for shift in (0, 1):
            video = sample["video"].roll(shift, dims=-1)
            jump = (video[..., 1:] - video[..., :-1]).abs().sum(dim=1)
            ratios.append((jump[boundary].median() / jump[~boundary].median()).item())
        assert ratios[0] > 4.0 and ratios[0] > 1.5 * ratios[1], (index, ratios)


def test_camera_translates_and_rotates_and_moving_objects_move():
    ds = SyntheticWorld(num_episodes=8, num_frames=16, height=48, width=72, seed=0)
    for index in range(8):
        c2w = ds.load(index, [0, 15])["cam_to_world"].double()
        assert (c2w[1, :3, 3] - c2w[0, :3, 3]).norm() > 0.1
        rel = c2w[0, :3, :3].T @ c2w[1, :3, :3]
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (rel.trace().item() - 1) / 2))))
        assert angle > 3.0
        scene = ds.scene(index)
        assert sum(o.moving for o in scene.objects) == 2
        for k, obj in enumerate(scene.objects):
            a, b = scene.object_to_world(k, 0), scene.object_to_world(k, 15)
            assert torch.equal(a, b) != obj.moving


def test_rendered_moving_object_follows_its_trajectory():
    """Pixels of a moving object sit on it at the pose of their own frame, not at the first pose."""
    ds = SyntheticWorld(num_episodes=8, num_frames=16, height=48, width=72, seed=0)
    checked = 0
    for index in range(8):
        scene = ds.scene(index)
        sample, surface = ds.render(index, range(16))
        for k, obj in enumerate(scene.objects):
            if not obj.moving:
                continue
            sid = NUM_ROOM_FACES + k
            for t in range(8, 16):
                mask = surface[t, 0] == sid
                if mask.sum() < 20:
                    continue
                points = unproject(sample, t)[mask]
                assert surface_residual(scene, sid, t, points).abs().max() < 5e-5
                assert surface_residual(scene, sid, 0, points).abs().median() > 0.02
                checked += 1
                break
    assert checked >= 3


def test_occlusion_boundaries_in_most_frames():
    ds = SyntheticWorld(num_episodes=8, num_frames=8, height=48, width=72, seed=0)
    frames_with_edges, frames = 0, 0
    for index in range(8):
        d = ds[index]["depth"][:, 0]
        ratio_x = torch.maximum(d[:, :, 1:] / d[:, :, :-1], d[:, :, :-1] / d[:, :, 1:]).amax(dim=(1, 2))
        ratio_y = torch.maximum(d[:, 1:] / d[:, :-1], d[:, :-1] / d[:, 1:]).amax(dim=(1, 2))
        frames_with_edges += int(((ratio_x > 1.2) | (ratio_y > 1.2)).sum())
        frames += d.shape[0]
    assert frames_with_edges / frames > 0.6


# ---------------------------------------------------------------- config and export


def test_built_from_yaml_by_jsonargparse():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--data", type=VideoDepthDataset)
    cfg = parser.parse_string(
        "data:\n"
        "  class_path: vdf.data.datasets.synthetic.SyntheticWorld\n"
        "  init_args:\n"
        "    num_episodes: 3\n"
        "    num_frames: 4\n"
        "    sizes: [[16, 24], [10, 14]]\n"
    )
    ds = parser.instantiate_classes(cfg).data
    assert isinstance(ds, SyntheticWorld) and len(ds) == 3 and ds.frame_size(1) == (10, 14)
