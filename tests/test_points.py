"""Point clouds (vdf.io.points): a synthetic episode's exact depth, back-projected with its K and
moved by its poses, puts every frame's static surfaces at the same place in the world."""

from __future__ import annotations

import numpy as np
import pytest

from vdf.data.datasets.synthetic import FLOOR_ID, NUM_ROOM_FACES, SyntheticWorld
from vdf.io.points import depth_to_points, intrinsics_from_fov, read_ply, scale_intrinsics, write_ply


@pytest.fixture(scope="module")
def episode():
    world = SyntheticWorld(num_episodes=1, num_frames=6, height=48, width=64, num_objects=8, moving_objects=1)
    sample, surface = world.render(0, range(0, 6))
    return world, sample, surface[:, 0].numpy()


def test_room_surfaces_agree_across_frames_in_world_coordinates(episode):
    world, sample, surface = episode
    scene = world.scene(0)
    K = sample["intrinsics"][0].numpy()
    assert np.allclose(K, intrinsics_from_fov(world.fov_degrees, 48, 64))
    half = {0: scene.half_x, 1: scene.room_height / 2, 2: scene.half_z}
    worst = 0.0
    for t in range(6):
        xyz, index = depth_to_points(sample["depth"][t, 0].numpy(), K, sample["cam_to_world"][t].numpy())
        ids = surface[t].reshape(-1)[index]
        for face in range(NUM_ROOM_FACES):
            # Face 2*axis + side is the plane coordinate[axis] = ±half (the floor y = 0, the
            # ceiling y = -height: the room is centred at y = -height/2).
            axis, side = divmod(face, 2)
            on = xyz[ids == face, axis].astype(np.float64)
            if on.size == 0:
                continue
            centre = -scene.room_height / 2 if axis == 1 else 0.0
            plane = centre + (half[axis] if side else -half[axis])
            worst = max(worst, float(np.abs(on - plane).max()))
        assert (ids == FLOOR_ID).any()
    # float32 ray casting and back-projection over a room of a few metres: about 1e-6 m.
    assert worst < 1e-5, worst


def test_static_objects_agree_across_frames(episode):
    """Every frame's points of a static object lie on that object's surface equation, in its own
    frame (``vdf.data.datasets.synthetic.SceneObject``): the frames agree on the object's place."""
    world, sample, surface = episode
    scene = world.scene(0)
    K = sample["intrinsics"][0].numpy()
    worst, checked = 0.0, 0
    for t in range(6):
        xyz, index = depth_to_points(sample["depth"][t, 0].numpy(), K, sample["cam_to_world"][t].numpy())
        ids = surface[t].reshape(-1)[index]
        for k, obj in enumerate(scene.objects):
            on = xyz[ids == NUM_ROOM_FACES + k].astype(np.float64)
            if obj.moving or on.size == 0:
                continue
            pose = scene.object_to_world(k, t).double().numpy()
            q = (on - pose[:3, 3]) @ pose[:3, :3]  # R^T (p - c), row by row
            half = np.asarray(obj.half_extents)
            if obj.kind == "box":
                residual = (np.abs(q) - half).max(axis=1)
            elif obj.kind == "sphere":
                residual = np.linalg.norm(q, axis=1) - half[0]
            else:
                residual = np.maximum(np.hypot(q[:, 0], q[:, 2]) - half[0], np.abs(q[:, 1]) - half[1])
            worst = max(worst, float(np.abs(residual).max()))
            checked += 1
    assert checked >= 6
    assert worst < 1e-5, worst  # about 1e-6 m, as for the room


def test_ply_round_trip_and_intrinsics_scaling(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)
    write_ply(tmp_path / "a.ply", xyz, rgb)
    got_xyz, got_rgb = read_ply(tmp_path / "a.ply")
    assert np.array_equal(got_xyz, xyz) and np.array_equal(got_rgb, rgb)
    assert open(tmp_path / "a.ply", "rb").read().startswith(b"ply\nformat binary_little_endian 1.0\n")
    # Halving an image halves f and keeps the image centre the centre.
    K = scale_intrinsics(intrinsics_from_fov(60, 48, 64), (48, 64), (24, 32))
    assert np.allclose(K, intrinsics_from_fov(60, 24, 32))
