"""Procedural synthetic world: textured primitives in a closed room, filmed by a moving camera.

Every episode is a room (floor, ceiling and four walls) with static objects standing on the floor
in an outer ring and moving objects flying on an inner ring, seen by a camera that translates and
turns on a smooth path near the room centre. Everything is ray cast analytically in torch over all
pixels of all requested frames at once, so depth, intrinsics and poses are exact and cost nothing
to store: the dataset is a few numbers and a seed.

World frame: y points **down** (like the OpenCV camera), the floor is the plane ``y = 0``, the
ceiling ``y = -room_height``, walls are ``x = ±half_x`` and ``z = ±half_z``. Time is continuous:
frame ``t`` is at ``t * SECONDS_PER_FRAME`` seconds, so any number of frames can be rendered and
frame ``t`` depends only on ``(seed, index, t)``.

Bitwise determinism across different frame subsets and chunkings relies on the per-pixel code
using only correctly rounded operations (``+ - * /``, ``sqrt``, ``floor``, comparisons, gathers):
vectorised and scalar CPU code paths of transcendental functions (``sin``, ``pow``, ...) may differ
in the last bit, and which path an element takes depends on its position in the tensor. The
per-frame poses use ``math`` on Python floats for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample

SYNTHETIC_MAX_DEPTH = 20.0
"""Recommended ``max_depth`` for evaluation: no pixel of any episode is farther (the largest
possible z-depth is about 13 m, the nearest surfaces are about 0.5 m away)."""

SECONDS_PER_FRAME = 0.1
"""Trajectories are functions of continuous time; frame ``t`` is rendered at this many seconds × t."""

ROOM_FACES = ("wall_-x", "wall_+x", "ceiling", "floor", "wall_-z", "wall_+z")
"""Surface ids 0..5 of the room: id ``2*axis + (side is +)``; object ``k`` has surface id ``6 + k``."""
FLOOR_ID = 3
NUM_ROOM_FACES = 6

_KIND_CODES = {"box": 0, "sphere": 1, "cylinder": 2}
_NOISE_SIZE = 256  # the 2-D value-noise lattice is periodic with this many cells along each axis
_MAX_CHUNK_PIXELS = 1 << 16  # chunk of pixels shaded at once: large enough to amortise dispatch,
# small enough that the few dozen temporaries of a chunk stay in cache


# --------------------------------------------------------------------------- scene description


@dataclass(frozen=True)
class Texture:
    """A procedural solid texture evaluated in the surface's own (object-local) coordinates.

    ``pattern = clamp(checker * w_checker + stripes * w_stripes + noise * w_noise, 0, 1)`` picks
    between ``color_a`` and ``color_b``; a finer noise modulates brightness by ``± detail``.
    """

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    w_checker: float
    w_stripes: float
    w_noise: float
    scale: float  # metres per checker cell / stripe period / noise cell
    stripe_dir: tuple[float, float, float]  # unit vector
    offset: tuple[float, float, float]  # in texture cells; decorrelates surfaces
    detail: float


@dataclass(frozen=True)
class SceneObject:
    """One primitive. Its surface, in its local frame ``q = R(t)^T (p - c(t))``, is

    - ``box``: ``max_i(|q_i| - half_extents_i) = 0``
    - ``sphere``: ``|q| = radius`` (``half_extents = (r, r, r)``)
    - ``cylinder`` (axis = local y, capped): ``max(sqrt(q_x² + q_z²) - r, |q_y| - half_height) = 0``
      with ``half_extents = (r, half_height, r)``

    Static objects stand on the floor; moving ones orbit the room centre at angle
    ``angle0 + angular_speed * s``, radius
    ``orbit_radius + radial_amp * sin(2π radial_freq s + radial_phase)``
    and height ``height + bob_amp * sin(2π bob_freq s + bob_phase)`` above the floor, while turning
    (``yaw0 + spin * s`` about y) and tumbling (``tilt_amp * sin(2π tilt_freq s + tilt_phase)`` about x).
    """

    kind: str
    half_extents: tuple[float, float, float]
    moving: bool
    texture: Texture
    orbit_radius: float
    angle0: float
    height: float  # of the centre above the floor (metres, positive up)
    yaw0: float
    angular_speed: float = 0.0
    radial_amp: float = 0.0
    radial_freq: float = 0.0
    radial_phase: float = 0.0
    bob_amp: float = 0.0
    bob_freq: float = 0.0
    bob_phase: float = 0.0
    spin: float = 0.0
    tilt_amp: float = 0.0
    tilt_freq: float = 0.0
    tilt_phase: float = 0.0

    def pose(self, frame: float) -> tuple[list[list[float]], list[float]]:
        """``(R, c)`` in float64 at frame time ``frame``: rotation (3×3 rows) and centre (3,)."""
        s = frame * SECONDS_PER_FRAME
        angle = self.angle0 + self.angular_speed * s
        tau = 2 * math.pi * s
        radius = self.orbit_radius + self.radial_amp * math.sin(self.radial_freq * tau + self.radial_phase)
        height = self.height + self.bob_amp * math.sin(self.bob_freq * tau + self.bob_phase)
        yaw = self.yaw0 + self.spin * s
        tilt = self.tilt_amp * math.sin(self.tilt_freq * tau + self.tilt_phase)
        centre = [radius * math.cos(angle), -height, radius * math.sin(angle)]
        return _matmul3(_rot_y(yaw), _rot_x(tilt)), centre


@dataclass(frozen=True)
class CameraPath:
    """Smooth camera trajectory near the room centre, as sums of sinusoids of time ``s`` (seconds).

    Position: ``x = x0 + amp_x sin(2π freq_x s + phase_x)``, same for z; eye ``height`` above the
    floor bobs by ``amp_y``. Orientation ``R = R_y(yaw) R_x(pitch) R_z(roll)`` with a steady turn
    ``yaw_rate`` plus oscillations; positive pitch looks down.
    """

    x0: float
    z0: float
    height: float
    amp_x: float
    amp_z: float
    amp_y: float
    freq_x: float
    freq_z: float
    freq_y: float
    phase_x: float
    phase_z: float
    phase_y: float
    yaw0: float
    yaw_rate: float
    yaw_amp: float
    yaw_freq: float
    yaw_phase: float
    pitch0: float
    pitch_amp: float
    pitch_freq: float
    pitch_phase: float
    roll_amp: float
    roll_freq: float
    roll_phase: float

    def pose(self, frame: float) -> tuple[list[list[float]], list[float]]:
        """``(R, o)`` in float64: camera-to-world rotation (columns = camera x, y, z) and centre."""
        s = frame * SECONDS_PER_FRAME
        tau = 2 * math.pi * s
        o = [
            self.x0 + self.amp_x * math.sin(self.freq_x * tau + self.phase_x),
            -(self.height + self.amp_y * math.sin(self.freq_y * tau + self.phase_y)),
            self.z0 + self.amp_z * math.sin(self.freq_z * tau + self.phase_z),
        ]
        yaw = self.yaw0 + self.yaw_rate * s + self.yaw_amp * math.sin(self.yaw_freq * tau + self.yaw_phase)
        pitch = self.pitch0 + self.pitch_amp * math.sin(self.pitch_freq * tau + self.pitch_phase)
        roll = self.roll_amp * math.sin(self.roll_freq * tau + self.roll_phase)
        return _matmul3(_matmul3(_rot_y(yaw), _rot_x(pitch)), _rot_z(roll)), o


@dataclass(frozen=True)
class EpisodeScene:
    """Everything that defines one episode; rendering is a pure function of this and the frame times.

    The room is the axis-aligned box ``[-half_x, half_x] × [-room_height, 0] × [-half_z, half_z]``
    seen from inside. ``noise_table`` is the periodic value-noise lattice, values in [0,1], stored as
    ``(_NOISE_SIZE + 1)**2`` values (first row and column repeated at the end).
    """

    half_x: float
    half_z: float
    room_height: float
    room_textures: tuple[Texture, ...]  # one per ROOM_FACES entry
    objects: tuple[SceneObject, ...]
    camera: CameraPath
    light_dir: tuple[float, float, float]  # unit vector towards the key light
    fill_dir: tuple[float, float, float]  # unit vector towards the fill light
    ambient: float
    key: float
    fill: float
    noise_table: torch.Tensor

    def camera_to_world(self, frame: float) -> torch.Tensor:
        """float32 (4,4) OpenCV camera-to-world pose at frame time ``frame``; what the renderer uses."""
        return _pose_matrix(*self.camera.pose(frame))

    def object_to_world(self, k: int, frame: float) -> torch.Tensor:
        """float32 (4,4) local-to-world transform of object ``k`` at frame time ``frame``."""
        return _pose_matrix(*self.objects[k].pose(frame))


def _rot_x(a: float) -> list[list[float]]:
    c, s = math.cos(a), math.sin(a)
    return [[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]]


def _rot_y(a: float) -> list[list[float]]:
    c, s = math.cos(a), math.sin(a)
    return [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]


def _rot_z(a: float) -> list[list[float]]:
    c, s = math.cos(a), math.sin(a)
    return [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]


def _matmul3(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _pose_matrix(rot: list[list[float]], centre: list[float]) -> torch.Tensor:
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = torch.tensor(rot, dtype=torch.float64)
    m[:3, 3] = torch.tensor(centre, dtype=torch.float64)
    return m.to(torch.float32)


def _bounding_radius(kind: str, half: tuple[float, float, float]) -> float:
    """Radius of the smallest ball around the centre that holds the primitive in any orientation."""
    if kind == "sphere":
        return half[0]
    if kind == "cylinder":
        return math.hypot(half[0], half[1])
    return math.sqrt(half[0] ** 2 + half[1] ** 2 + half[2] ** 2)


def _episode_seed(seed: int, index: int) -> int:
    """splitmix64 of (seed, index): distinct streams for every pair, unlike ``seed + index``."""
    mask = (1 << 64) - 1
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


class _Draws:
    """Uniform draws from a seeded ``torch.Generator``, fetched in blocks to keep scene building cheap."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.block: list[float] = []

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self.block:
            self.block = torch.rand(256, generator=self.generator, dtype=torch.float64).tolist()[::-1]
        return lo + (hi - lo) * self.block.pop()

    def choice(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)

    def sign(self) -> float:
        return 1.0 if self.uniform() < 0.5 else -1.0

    def unit(self) -> tuple[float, float, float]:
        while True:
            v = [self.uniform(-1.0, 1.0) for _ in range(3)]
            n = math.sqrt(sum(x * x for x in v))
            if 0.1 < n <= 1.0:
                return (v[0] / n, v[1] / n, v[2] / n)

    def colour(self, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float, float]:
        return (self.uniform(lo, hi), self.uniform(lo, hi), self.uniform(lo, hi))


def _texture(
    d: _Draws, scale_range: tuple[float, float], kind: int | None = None, bright: tuple[float, float] = (0.05, 0.95)
) -> Texture:
    # kinds: 0 checker, 1 stripes, 2 noise, 3 checker mottled by noise
    kind = d.choice(4) if kind is None else kind
    weights = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.3), (0.7, 0.0, 0.6)][kind]
    a = d.colour(*bright)
    b = d.colour(*bright)
    # Low-contrast pairs would hide the texture that tests and models rely on.
    if sum(abs(x - y) for x, y in zip(a, b)) < 0.6:
        b = tuple(1.0 - x for x in a)
    return Texture(
        color_a=a,
        color_b=b,
        w_checker=weights[0],
        w_stripes=weights[1],
        w_noise=weights[2],
        scale=d.uniform(*scale_range),
        stripe_dir=d.unit(),
        offset=(d.uniform(0, _NOISE_SIZE), d.uniform(0, _NOISE_SIZE), d.uniform(0, _NOISE_SIZE)),
        detail=d.uniform(0.08, 0.25),
    )


# Layout budget (metres, distances from the room's vertical axis): the camera stays within
# _CAMERA_REACH of the centre along x and z (so within 1.42 m), moving objects (bounding balls, with
# their radial wobble) stay inside _MOVING_RING, static ones stand in the ring beyond it. Nothing
# can collide with the camera or cross into another ring, and the nearest surface is >= ~0.5 m away.
_CAMERA_REACH = 1.0
_MOVING_RING = (2.2, 3.5)
_STATIC_RING_START = 3.6
_WALL_MARGIN = 0.2


def build_scene(seed: int, index: int, num_objects: int, moving_objects: int) -> EpisodeScene:
    """The scene of episode ``index``; a pure function of its arguments (own ``torch.Generator``)."""
    g = torch.Generator().manual_seed(_episode_seed(seed, index))
    d = _Draws(g)
    half_x, half_z = d.uniform(5.5, 8.0), d.uniform(5.5, 8.0)
    room_height = d.uniform(2.8, 3.6)
    room_textures = []
    for face in ROOM_FACES:
        if face == "floor":
            room_textures.append(_texture(d, (0.4, 1.0), kind=d.choice(2) * 3))
        elif face == "ceiling":
            room_textures.append(_texture(d, (0.6, 1.5), kind=2, bright=(0.5, 0.95)))
        else:
            room_textures.append(_texture(d, (0.3, 1.2)))

    camera = CameraPath(
        x0=d.uniform(-0.3, 0.3),
        z0=d.uniform(-0.3, 0.3),
        height=d.uniform(1.3, 1.7),
        amp_x=d.uniform(0.3, _CAMERA_REACH - 0.3),
        amp_z=d.uniform(0.3, _CAMERA_REACH - 0.3),
        amp_y=d.uniform(0.02, 0.1),
        freq_x=d.uniform(0.05, 0.15),
        freq_z=d.uniform(0.05, 0.15),
        freq_y=d.uniform(0.1, 0.3),
        phase_x=d.uniform(0, 2 * math.pi),
        phase_z=d.uniform(0, 2 * math.pi),
        phase_y=d.uniform(0, 2 * math.pi),
        yaw0=d.uniform(0, 2 * math.pi),
        yaw_rate=d.sign() * d.uniform(0.15, 0.45),
        yaw_amp=d.uniform(0.1, 0.3),
        yaw_freq=d.uniform(0.05, 0.2),
        yaw_phase=d.uniform(0, 2 * math.pi),
        pitch0=d.uniform(-0.05, 0.2),
        pitch_amp=d.uniform(0.02, 0.1),
        pitch_freq=d.uniform(0.05, 0.2),
        pitch_phase=d.uniform(0, 2 * math.pi),
        roll_amp=d.uniform(0.0, 0.05),
        roll_freq=d.uniform(0.05, 0.2),
        roll_phase=d.uniform(0, 2 * math.pi),
    )

    n_moving = max(0, min(moving_objects, num_objects))
    n_static = num_objects - n_moving
    objects: list[SceneObject] = []
    base = d.uniform(0, 2 * math.pi)
    static_ring_end = min(half_x, half_z) - _WALL_MARGIN
    # Footprint radius that still fits the static ring.
    max_reach = (static_ring_end - _STATIC_RING_START) / 2 - 0.05
    for k in range(n_static):
        kind = ("box", "sphere", "cylinder")[d.choice(3)]
        if kind == "box":
            half = (d.uniform(0.25, 0.7), d.uniform(0.25, 0.9), d.uniform(0.25, 0.7))
            reach = math.hypot(half[0], half[2])
            if reach > max_reach:
                half = (half[0] * max_reach / reach, half[1], half[2] * max_reach / reach)
                reach = max_reach
        elif kind == "sphere":
            r = min(d.uniform(0.3, 0.7), max_reach)
            half, reach = (r, r, r), r
        else:
            r = min(d.uniform(0.2, 0.5), max_reach)
            half, reach = (r, d.uniform(0.4, 1.2), r), r
        lo, hi = _STATIC_RING_START + reach, static_ring_end - reach
        objects.append(
            SceneObject(
                kind=kind,
                half_extents=half,
                moving=False,
                texture=_texture(d, (0.08, 0.3)),
                orbit_radius=d.uniform(lo, hi),
                # one angular sector per static object, jittered, so neighbours do not overlap
                angle0=base + 2 * math.pi * (k + d.uniform(0.3, 0.7)) / n_static,
                height=half[1],
                yaw0=d.uniform(0, 2 * math.pi),
            )
        )
    base = d.uniform(0, 2 * math.pi)
    for k in range(n_moving):
        kind = ("box", "sphere", "cylinder")[d.choice(3)]
        if kind == "box":
            half = (d.uniform(0.15, 0.3), d.uniform(0.15, 0.3), d.uniform(0.15, 0.3))
        elif kind == "sphere":
            r = d.uniform(0.25, 0.5)
            half = (r, r, r)
        else:
            r = d.uniform(0.15, 0.3)
            half = (r, d.uniform(0.2, 0.35), r)
        bound = _bounding_radius(kind, half)  # <= 0.52 with the sizes above
        radial_amp = d.uniform(0.0, 0.1)
        bob_amp = d.uniform(0.0, 0.15)
        lo = _MOVING_RING[0] + bound + radial_amp
        hi = max(lo, _MOVING_RING[1] - bound - radial_amp)  # the sizes above keep lo <= hi
        h_lo = bound + bob_amp + 0.1
        h_hi = max(h_lo, min(room_height - bound - bob_amp - 0.1, 2.0))
        speed = d.uniform(0.4, 1.2)  # m/s along the orbit
        orbit_radius = d.uniform(lo, hi)
        objects.append(
            SceneObject(
                kind=kind,
                half_extents=half,
                moving=True,
                texture=_texture(d, (0.06, 0.2)),
                orbit_radius=orbit_radius,
                angle0=base + 2 * math.pi * (k + d.uniform(0.3, 0.7)) / n_moving,
                height=d.uniform(h_lo, h_hi),
                yaw0=d.uniform(0, 2 * math.pi),
                angular_speed=d.sign() * speed / orbit_radius,
                radial_amp=radial_amp,
                radial_freq=d.uniform(0.1, 0.4),
                radial_phase=d.uniform(0, 2 * math.pi),
                bob_amp=bob_amp,
                bob_freq=d.uniform(0.1, 0.4),
                bob_phase=d.uniform(0, 2 * math.pi),
                spin=d.sign() * d.uniform(0.5, 2.0),
                tilt_amp=d.uniform(0.2, 0.8),
                tilt_freq=d.uniform(0.1, 0.3),
                tilt_phase=d.uniform(0, 2 * math.pi),
            )
        )

    lx, lz = d.uniform(-0.6, 0.6), d.uniform(-0.6, 0.6)
    n = math.sqrt(lx * lx + 1.0 + lz * lz)
    light = (lx / n, -1.0 / n, lz / n)  # from above: world y points down
    fill = (-light[0], 0.5 / n, -light[2])
    nf = math.sqrt(sum(x * x for x in fill))
    lattice = torch.rand(_NOISE_SIZE, _NOISE_SIZE, generator=g, dtype=torch.float32)
    noise_table = torch.cat([lattice, lattice[:1]]).T
    noise_table = torch.cat([noise_table, noise_table[:1]]).T.contiguous().reshape(-1)
    return EpisodeScene(
        half_x=half_x,
        half_z=half_z,
        room_height=room_height,
        room_textures=tuple(room_textures),
        objects=tuple(objects),
        camera=camera,
        light_dir=light,
        fill_dir=tuple(x / nf for x in fill),
        ambient=d.uniform(0.25, 0.35),
        key=d.uniform(0.55, 0.75),
        fill=d.uniform(0.1, 0.25),
        noise_table=noise_table,
    )


# --------------------------------------------------------------------------- ray casting
#
# A pixel (u, v) casts the ray o + t R_c (xc, yc, 1) with xc = (u - cx) / fx, yc = (v - cy) / fy, so
# the ray parameter t at a hit *is* the planar depth. In the local frame of a surface s (rotation
# R_s, centre c_s) the same ray is q(t) = v_s + t M_s (xc, yc, 1) with M_s = R_s^T R_c and
# v_s = R_s^T (o - c_s): per-frame 3x3 numbers times a row (xc) and a column (yc) vector, so a local
# ray direction costs one full-size add per component instead of a full matrix product.


def _local_dir(m, xc, yc):
    """Local ray directions: ``m`` is a list of 3 rows of 3 (Tc,1,1) tensors; -> 3 × (Tc,H,W)."""
    return [(m[i][0] * xc + m[i][2]) + m[i][1] * yc for i in range(3)]


def _hit_box(o, d, half) -> torch.Tensor:
    """Nearest positive hit of local rays with the box ``|q_i| <= half_i`` (slab method); inf on miss."""
    t_near = t_far = None
    for oi, di, hi in zip(o, d, half):
        inv = 1.0 / di
        t1 = (-hi - oi) * inv
        t2 = (hi - oi) * inv
        lo, up = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near = lo if t_near is None else torch.maximum(t_near, lo)
        t_far = up if t_far is None else torch.minimum(t_far, up)
    hit = (t_near <= t_far) & (t_near > 0)
    return torch.where(hit, t_near, torch.inf)


def _near_root(b, a, l2, r2: float) -> torch.Tensor:
    """Near root of ``a t² + 2 b t + c = 0`` for a sphere/circle, with the discriminant taken from the
    squared closest-approach distance ``l2`` (accurate in float32 far from the object, unlike
    ``b² - a c``); inf where the ray misses or the root is behind the camera."""
    disc = r2 - l2
    hit = disc >= 0
    # sqrt of negatives takes a very slow NaN path on x86: clamp, the mask drops those rays anyway.
    t = -(b + torch.sqrt(a * torch.clamp(disc, min=0.0))) / a
    return torch.where(hit & (t > 0), t, torch.inf)


def _hit_sphere(oc, xc, yc, a, radius: float) -> torch.Tensor:
    """Camera-frame rays ``t (xc, yc, 1)`` against a sphere centred at ``-oc`` ((Tc,1,1) each)."""
    b = (oc[0] * xc + oc[2]) + oc[1] * yc
    k = b / a
    l0 = oc[0] - k * xc
    l1 = oc[1] - k * yc
    l2 = oc[2] - k
    return _near_root(b, a, l0 * l0 + l1 * l1 + l2 * l2, radius * radius)


def _hit_cylinder(o, d, radius: float, half_height: float) -> torch.Tensor:
    """Local rays against the capped cylinder around local y; inf on miss. Cameras are outside."""
    a = d[0] * d[0] + d[2] * d[2]
    b = d[0] * o[0] + d[2] * o[2]
    k = b / a
    lx = o[0] - k * d[0]
    lz = o[2] - k * d[2]
    t_side = _near_root(b, a, lx * lx + lz * lz, radius * radius)
    y_side = o[1] + t_side * d[1]
    t_side = torch.where(y_side.abs() <= half_height, t_side, torch.inf)
    # Only the cap facing the camera can be the first hit, and only if the camera is beyond it.
    cap_y = torch.where(o[1] < 0, -half_height, half_height)
    t_cap = (cap_y - o[1]) / d[1]
    x = o[0] + t_cap * d[0]
    z = o[2] + t_cap * d[2]
    cap_ok = (x * x + z * z <= radius * radius) & (t_cap > 0) & (o[1].abs() > half_height)
    return torch.minimum(t_side, torch.where(cap_ok, t_cap, torch.inf))


def _value_noise(x, y, z, table: torch.Tensor) -> torch.Tensor:
    """Value noise of a 3-D point in [0,1]: bilinear, smoothstep-weighted 2-D lattice noise of a
    sheared projection of the point.

    A 2-D lattice needs 4 lookups instead of 8. The projection is non-degenerate on every
    axis-aligned plane, which is where flat faces lie in their local frames, so no face is blank.
    """
    n = _NOISE_SIZE
    u = (x + 0.41 * y) + 0.73 * z
    v = (0.29 * x + y) - 0.57 * z
    fu, fv = torch.floor(u), torch.floor(v)
    tu, tv = u - fu, v - fv
    su = tu * tu * (3.0 - 2.0 * tu)
    sv = tv * tv * (3.0 - 2.0 * tv)
    # The stored lattice repeats its first row and column (rows of n + 1), so the +1 neighbours
    # need no wrap-around of their own.
    i00 = (fu.int() & (n - 1)) * (n + 1) + (fv.int() & (n - 1))
    c00 = table.index_select(0, i00)
    c10 = table.index_select(0, i00 + (n + 1))
    c01 = table.index_select(0, i00 + 1)
    c11 = table.index_select(0, i00 + (n + 2))
    near = c00 + (c10 - c00) * su
    far = c01 + (c11 - c01) * su
    return near + (far - near) * sv


# Per-surface rows of the shading table, gathered for every pixel by its surface id.
_R_INV_HALF, _R_KIND, _R_COL_A, _R_COL_B, _R_WEIGHTS, _R_INV_SCALE, _R_STRIPE, _R_OFFSET, _R_DETAIL = (
    0,
    3,
    4,
    7,
    10,
    13,
    14,
    17,
    20,
)
_NUM_ROWS = 21


def _surface_rows(scene: EpisodeScene) -> torch.Tensor:
    """(_NUM_ROWS, S) float32: shape and texture parameters of every surface (S = 6 + objects)."""
    room_half = (scene.half_x, scene.room_height / 2, scene.half_z)
    surfaces = [(room_half, "box", tex) for tex in scene.room_textures]
    surfaces += [(obj.half_extents, obj.kind, obj.texture) for obj in scene.objects]
    rows = [
        [1.0 / h for h in half]
        + [float(_KIND_CODES[kind])]
        + list(tex.color_a)
        + list(tex.color_b)
        + [tex.w_checker, tex.w_stripes, tex.w_noise]
        + [1.0 / tex.scale]
        + list(tex.stripe_dir)
        + list(tex.offset)
        + [tex.detail]
        for half, kind, tex in surfaces
    ]
    return torch.tensor(rows, dtype=torch.float32).T.contiguous()


def _frame_rows(scene: EpisodeScene, cam: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """(S, Tc, 18) float32 per-frame numbers of every surface: ``v_s`` (3), ``M_s`` (9, row-major),
    then the key and fill light directions in the surface's local frame (negated for the room,
    whose normals point inwards).

    ``cam`` (Tc,4,4) and ``obj`` (n_obj,Tc,4,4) float32 poses. Computed in float64 with products
    written out element-wise, so that a frame's numbers do not depend on the other frames of the batch.
    """
    tc = cam.shape[0]
    cam = cam.double()
    room = torch.zeros(NUM_ROOM_FACES, tc, 4, 4, dtype=torch.float64)
    room[:, :, [0, 1, 2, 3], [0, 1, 2, 3]] = 1.0
    room[:, :, 1, 3] = -scene.room_height / 2
    surf = torch.cat([room, obj.double()])  # (S,Tc,4,4) local-to-world
    rs, cs = surf[:, :, :3, :3], surf[:, :, :3, 3]
    rc, o = cam[:, :3, :3], cam[:, :3, 3]

    def rt_times(vec):  # R_s^T vec for vec (..., 3) broadcastable to (S,Tc,3)
        return rs[..., 0, :] * vec[..., 0:1] + rs[..., 1, :] * vec[..., 1:2] + rs[..., 2, :] * vec[..., 2:3]

    v = rt_times(o - cs)
    m = torch.stack([rt_times(rc[:, :, j]) for j in range(3)], dim=-1)  # (S,Tc,3,3): column j = R_s^T R_c e_j
    sign = torch.ones(surf.shape[0], 1, 1, dtype=torch.float64)
    sign[:NUM_ROOM_FACES] = -1.0
    l1 = rt_times(torch.tensor(scene.light_dir, dtype=torch.float64)) * sign
    l2 = rt_times(torch.tensor(scene.fill_dir, dtype=torch.float64)) * sign
    return torch.cat([v, m.reshape(*m.shape[:2], 9), l1, l2], dim=-1).float()


def _shade(
    scene: EpisodeScene,
    q: list[torch.Tensor],
    rows: list[torch.Tensor],
    per_frame: list[torch.Tensor],
    footprint: torch.Tensor,
) -> torch.Tensor:
    """Colour of hit points from their local coordinates.

    ``q``: 3 × (M,) hit points in their surface's local frame; ``rows``: the ``_NUM_ROWS`` surface
    rows gathered per pixel, (M,) each; ``per_frame``: 9 × (M,) camera centre, key and fill light
    directions in that local frame; ``footprint``: (M,) width of the pixel at the hit point facing
    the camera (depth / focal length), in metres. Returns (3, M) in [0,1].
    """
    inv_half = rows[_R_INV_HALF : _R_INV_HALF + 3]
    kind = rows[_R_KIND]
    is_box, is_sphere, is_cyl = kind == 0, kind == 1, kind == 2
    a = [q[i].abs() * inv_half[i] for i in range(3)]  # normalised distance to each face pair
    sgn = [torch.sign(q[i]) for i in range(3)]  # never 0 on a flat face: |q_i| = half_i there
    # Which face a box point lies on; for cylinders, axis 1 marks the caps.
    box_x = is_box & (a[0] >= a[1]) & (a[0] >= a[2])
    box_y = is_box & ~box_x & (a[1] >= a[2])
    box_z = is_box & ~(box_x | box_y)
    radial = torch.sqrt(q[0] * q[0] + q[2] * q[2]) * inv_half[0]
    cap = is_cyl & (a[1] >= radial)
    side = is_cyl & ~cap
    flat = (box_x, box_y | cap, box_z)  # the coordinate across a flat face is constant on it

    # Local normals: ±axis on flat faces, q/r on spheres, radial (no y) on cylinder sides.
    normal = []
    for i in range(3):
        curved = q[i] * inv_half[i]
        if i == 1:
            n_i = torch.where(is_sphere, curved, 0.0)
        else:
            n_i = torch.where(is_sphere, curved, torch.where(side, curved / radial, 0.0))
        normal.append(torch.where(flat[i], sgn[i], n_i))

    def lambert(light):
        return torch.clamp(normal[0] * light[0] + normal[1] * light[1] + normal[2] * light[2], min=0.0)

    shade = scene.ambient + scene.key * lambert(per_frame[3:6]) + scene.fill * lambert(per_frame[6:9])

    # Frequency clamping, a cheap anti-aliasing: a pattern fades to its mean as its cells shrink
    # below ~1.5 pixels, instead of aliasing into noise that flickers from frame to frame. Oblique
    # views stretch the footprint by 1 / cos(view angle), up to 4x.
    view = [q[i] - per_frame[i] for i in range(3)]
    cos = (normal[0] * view[0] + normal[1] * view[1] + normal[2] * view[2]).abs() / torch.sqrt(
        view[0] * view[0] + view[1] * view[1] + view[2] * view[2]
    )
    cells_per_pixel = footprint * rows[_R_INV_SCALE] / torch.clamp(cos, min=0.25)

    def contrast(frequency: float):
        return torch.clamp(1.5 - cells_per_pixel * frequency, 0.0, 1.0)

    # Texture coordinates in cells. The coordinate across a flat face is replaced by a per-face
    # constant: it is constant there anyway, and rounding noise around a cell boundary would speckle.
    inv_scale = rows[_R_INV_SCALE]
    tc = [torch.where(flat[i], sgn[i] * 0.37, q[i] * inv_scale) + rows[_R_OFFSET + i] for i in range(3)]
    cells = torch.floor(tc[0]) + torch.floor(tc[1]) + torch.floor(tc[2])
    checker = cells - 2.0 * torch.floor(cells * 0.5)
    w = tc[0] * rows[_R_STRIPE] + tc[1] * rows[_R_STRIPE + 1] + tc[2] * rows[_R_STRIPE + 2]
    stripes = (2.0 * (w - torch.floor(w)) - 1.0).abs()
    noise = _value_noise(tc[0] * 1.7, tc[1] * 1.7, tc[2] * 1.7, scene.noise_table)
    w_checker, w_stripes, w_noise = rows[_R_WEIGHTS : _R_WEIGHTS + 3]
    # Lattice cells per texture cell: 1 for the checker, ~2 for the noise (1.7 and the shear).
    pattern = (
        0.5 * ((w_checker + w_stripes) + w_noise)
        + w_checker * (checker - 0.5) * contrast(1.0)
        + w_stripes * (stripes - 0.5) * contrast(1.0)
        + w_noise * (noise - 0.5) * contrast(2.0)
    )
    pattern = torch.clamp(pattern, 0.0, 1.0)
    fine = _value_noise(tc[0] * 3.0 + 11.0, tc[1] * 3.0 + 5.0, tc[2] * 3.0 + 7.0, scene.noise_table)
    brightness = (1.0 + rows[_R_DETAIL] * (2.0 * fine - 1.0) * contrast(3.5)) * shade
    rgb = []
    for c in range(3):
        ca, cb = rows[_R_COL_A + c], rows[_R_COL_B + c]
        linear = (ca + (cb - ca) * pattern) * brightness
        rgb.append(torch.sqrt(torch.clamp(linear, 0.0, 1.0)))  # gamma 2: a correctly rounded stand-in for 2.2
    return torch.stack(rgb)


def render_frames(
    scene: EpisodeScene, frames: Sequence[int], height: int, width: int, intrinsics: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Ray cast ``scene`` at ``frames``.

    Returns ``video`` float32 (T,3,H,W) in [0,1], ``depth`` float32 (T,1,H,W) planar z-depth in
    metres, ``surface`` int64 (T,1,H,W) surface id (see ``ROOM_FACES``; object k is 6 + k) and
    ``cam_to_world`` float32 (T,4,4). Pixel ``(u, v)`` (column, row) is the ray through
    ``K^-1 [u, v, 1]``, i.e. integer coordinates are pixel centres.
    """
    frames = list(frames)
    T, H, W = len(frames), height, width
    n_obj = len(scene.objects)
    n_surf = NUM_ROOM_FACES + n_obj
    cam = torch.stack([scene.camera_to_world(f) for f in frames])
    obj = (
        torch.stack([torch.stack([scene.object_to_world(k, f) for f in frames]) for k in range(n_obj)])
        if n_obj
        else torch.zeros(0, T, 4, 4)
    )
    fx, fy, cx, cy = (
        float(intrinsics[0, 0]),
        float(intrinsics[1, 1]),
        float(intrinsics[0, 2]),
        float(intrinsics[1, 2]),
    )
    xc = ((torch.arange(W, dtype=torch.float32) - cx) / fx).view(1, 1, W)
    yc = ((torch.arange(H, dtype=torch.float32) - cy) / fy).view(1, H, 1)
    a = (xc * xc + 1.0) + yc * yc  # |(xc, yc, 1)|², the same for every frame
    room_half = (scene.half_x, scene.room_height / 2, scene.half_z)
    surface_rows = _surface_rows(scene)

    video = torch.empty(T, 3, H, W)
    depth = torch.empty(T, 1, H, W)
    surface = torch.empty(T, 1, H, W, dtype=torch.long)
    chunk = max(1, _MAX_CHUNK_PIXELS // (H * W))
    # Whole frames per chunk: only the assignment of frames to chunks changes with the request,
    # never the arithmetic of a pixel.
    for start in range(0, T, chunk):
        sl = slice(start, min(T, start + chunk))
        tc = sl.stop - sl.start
        per_frame = _frame_rows(scene, cam[sl], obj[:, sl])  # (S,Tc,18)
        orig = [[per_frame[s, :, i].view(tc, 1, 1) for i in range(3)] for s in range(n_surf)]
        mats = [
            [[per_frame[s, :, 3 + 3 * i + j].view(tc, 1, 1) for j in range(3)] for i in range(3)] for s in range(n_surf)
        ]

        # Room, seen from inside: the exit distance of each slab, nearest slab wins.
        d = _local_dir(mats[0], xc, yc)
        best = best_id = None
        for i in range(3):
            inv = 1.0 / d[i]
            t_axis = torch.maximum((-room_half[i] - orig[0][i]) * inv, (room_half[i] - orig[0][i]) * inv)
            face = torch.where(d[i] > 0, 2 * i + 1, 2 * i)
            if best is None:
                best, best_id = t_axis, face
            else:
                closer = t_axis < best
                best = torch.where(closer, t_axis, best)
                best_id = torch.where(closer, face, best_id)
        # Hit points in the local frame of the surface hit, kept up to date as objects are cast.
        q = [orig[0][i] + best * d[i] for i in range(3)]

        for k, ob in enumerate(scene.objects):
            s = NUM_ROOM_FACES + k
            oc = _camera_offset(cam[sl], obj[k, sl])
            # Only pixels whose rays can reach the object's bounding ball are cast; every other
            # ray misses anyway, so the result is the same as casting all of them.
            rect = _screen_rect(oc, _bounding_radius(ob.kind, ob.half_extents), (fx, fy, cx, cy), H, W)
            if rect is None:
                continue
            rows_, cols = slice(rect[0], rect[1]), slice(rect[2], rect[3])
            xs, ys = xc[:, :, cols], yc[:, rows_, :]
            d = _local_dir(mats[s], xs, ys)
            if ob.kind == "sphere":
                # Rotation invariant: cast in the camera frame, where |d|² is shared by all spheres.
                t_k = _hit_sphere([x.float() for x in oc], xs, ys, a[:, rows_, cols], ob.half_extents[0])
            elif ob.kind == "box":
                t_k = _hit_box(orig[s], d, ob.half_extents)
            else:
                t_k = _hit_cylinder(orig[s], d, ob.half_extents[0], ob.half_extents[1])
            old_t = best[:, rows_, cols]
            closer = t_k < old_t
            best[:, rows_, cols] = torch.where(closer, t_k, old_t)
            best_id[:, rows_, cols] = torch.where(closer, s, best_id[:, rows_, cols])
            for i in range(3):
                q[i][:, rows_, cols] = torch.where(closer, orig[s][i] + t_k * d[i], q[i][:, rows_, cols])

        # Shade: gather every pixel's surface parameters, and its per-frame camera and lights.
        sid = best_id.reshape(-1)
        rows = [row.index_select(0, sid) for row in surface_rows]  # row by row: faster than a 2-D gather
        frame_table = torch.cat([per_frame[:, :, :3], per_frame[:, :, 12:]], dim=-1)
        frame_table = frame_table.reshape(n_surf * tc, 9).T.contiguous()
        g = (best_id * tc + torch.arange(tc).view(tc, 1, 1)).reshape(-1)
        frame_rows = [row.index_select(0, g) for row in frame_table]
        footprint = best.reshape(-1) * (1.0 / fx)
        rgb = _shade(scene, [qi.reshape(-1) for qi in q], rows, frame_rows, footprint)
        video[sl] = rgb.view(3, tc, H, W).transpose(0, 1)
        depth[sl, 0] = best
        surface[sl, 0] = best_id
    return {"video": video, "depth": depth, "surface": surface, "cam_to_world": cam}


def _camera_offset(cam: torch.Tensor, obj: torch.Tensor) -> list[torch.Tensor]:
    """``R_c^T (o - c)`` per frame as 3 (Tc,1,1) float64 tensors; ``cam``/``obj`` (Tc,4,4)."""
    cam, obj = cam.double(), obj.double()
    w = cam[:, :3, 3] - obj[:, :3, 3]
    r = cam[:, :3, :3]
    out = r[:, 0, :] * w[:, 0:1] + r[:, 1, :] * w[:, 1:2] + r[:, 2, :] * w[:, 2:3]
    return [out[:, i].view(-1, 1, 1) for i in range(3)]


def _screen_rect(
    oc: list[torch.Tensor], radius: float, k: tuple[float, float, float, float], height: int, width: int
) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle ``(v0, v1, u0, u1)`` (end-exclusive) covering the image of a ball
    of ``radius`` centred at ``-oc`` (camera frame) in any of the frames; None if it is never in view.
    """
    fx, fy, cx, cy = k
    r = radius * 1.01 + 1e-3  # slack for the float32 rounding of the ray casting
    box = None
    for x, y, z in zip(*(-c.flatten() for c in oc)):
        x, y, z = float(x), float(y), float(z)
        if z + r <= 0:
            continue  # behind the camera
        if z - r <= 1e-3:
            return 0, height, 0, width  # the ball straddles the camera plane: cast everything

        def extent(p):  # range of p/z over the box [p-r, p+r] x [z-r, z+r] around the ball
            lo = (p - r) / (z + r) if p - r > 0 else (p - r) / (z - r)
            hi = (p + r) / (z - r) if p + r > 0 else (p + r) / (z + r)
            return lo, hi

        (x0, x1), (y0, y1) = extent(x), extent(y)
        u0, u1 = math.floor(fx * x0 + cx) - 1, math.ceil(fx * x1 + cx) + 2
        v0, v1 = math.floor(fy * y0 + cy) - 1, math.ceil(fy * y1 + cy) + 2
        box = (v0, v1, u0, u1) if box is None else (min(box[0], v0), max(box[1], v1), min(box[2], u0), max(box[3], u1))
    if box is None:
        return None
    v0, v1, u0, u1 = max(box[0], 0), min(box[1], height), max(box[2], 0), min(box[3], width)
    return (v0, v1, u0, u1) if v0 < v1 and u0 < u1 else None


# --------------------------------------------------------------------------- dataset


class SyntheticWorld(VideoDepthDataset):
    """Procedural video-depth episodes with exact depth, intrinsics and poses; no files needed.

    Args:
        num_episodes: number of items (episodes) in the dataset.
        num_frames: frames per episode (``sequence_length``); any value, trajectories are continuous.
        height: frame height in pixels (when ``sizes`` is not given).
        width: frame width in pixels (when ``sizes`` is not given).
        seed: dataset seed; episode ``i`` depends only on ``(seed, i)``.
        num_objects: primitives (boxes, spheres, capped cylinders) per episode besides the room.
        moving_objects: how many of ``num_objects`` fly on their own trajectories; the rest stand
            still on the floor.
        fov_degrees: horizontal field of view; square pixels, principal point at the image centre.
        sizes: optional list of ``(H, W)``; episode ``i`` uses ``sizes[i % len(sizes)]`` (for
            mixed-resolution batching). Overrides ``height``/``width``.
    """

    name = "synthetic_world"
    max_depth = SYNTHETIC_MAX_DEPTH

    def __init__(
        self,
        num_episodes: int = 64,
        num_frames: int = 16,
        height: int = 64,
        width: int = 96,
        seed: int = 0,
        num_objects: int = 6,
        moving_objects: int = 2,
        fov_degrees: float = 60.0,
        sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if num_episodes < 0 or num_frames < 1:
            raise ValueError(f"need num_episodes >= 0 and num_frames >= 1, got {num_episodes}, {num_frames}")
        if not 0 < fov_degrees < 180:
            raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
        self.sizes = [(int(h), int(w)) for h, w in (sizes if sizes else [(height, width)])]
        if any(h < 1 or w < 1 for h, w in self.sizes):
            raise ValueError(f"frame sizes must be positive, got {self.sizes}")
        if num_objects < 0 or moving_objects < 0:
            raise ValueError("num_objects and moving_objects must be >= 0")
        self.num_episodes = num_episodes
        self.num_frames = num_frames
        self.seed = seed
        self.num_objects = num_objects
        self.moving_objects = moving_objects
        self.fov_degrees = fov_degrees

    def __len__(self) -> int:
        return self.num_episodes

    def sequence_length(self, index: int) -> int:
        return self.num_frames

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index % len(self.sizes)]

    def intrinsics(self, index: int) -> torch.Tensor:
        """float32 (3,3) pixel K of episode ``index``; ``fov_degrees`` spans the full width."""
        h, w = self.frame_size(index)
        f = (w / 2) / math.tan(math.radians(self.fov_degrees) / 2)
        k = [[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]]
        return torch.tensor(k, dtype=torch.float32)

    def scene(self, index: int) -> EpisodeScene:
        """The full description of episode ``index`` (room, objects and their trajectories, camera path)."""
        self._check_index(index)
        return build_scene(self.seed, index, self.num_objects, self.moving_objects)

    def render(self, index: int, frames: Sequence[int]) -> tuple[Sample, torch.Tensor]:
        """Like ``load`` but also returns the int64 (T,1,H,W) surface id of every pixel.

        Surface ids: 0..5 are the room faces in ``ROOM_FACES`` order (3 = floor), ``6 + k`` is
        ``scene(index).objects[k]``.
        """
        frames = [int(f) for f in frames]
        if not frames:
            raise ValueError("at least one frame must be requested")
        bad = [f for f in frames if not 0 <= f < self.num_frames]
        if bad:
            raise IndexError(f"{self.name}: frames {bad} out of range for {self.num_frames} frames")
        scene = self.scene(index)
        h, w = self.frame_size(index)
        k = self.intrinsics(index)
        out = render_frames(scene, frames, h, w, k)
        depth = out["depth"]
        sample: Sample = {
            "video": out["video"],
            "depth": depth,
            "valid": torch.isfinite(depth) & (depth > 0),
            "frame_index": torch.tensor(frames, dtype=torch.int64),
            "intrinsics": k.expand(len(frames), 3, 3).clone(),
            "cam_to_world": out["cam_to_world"],
            "meta": {"dataset": self.name, "sequence": f"episode_{index:05d}", "paths": []},
        }
        return sample, out["surface"]

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        return self.render(index, frames)[0]

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"{self.name}: index {index} out of range for {self.num_episodes} items")
