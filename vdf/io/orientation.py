"""Showing frames upright: the right-angle rotation and mirroring a video or image asks for.

Phones store frames as the sensor saw them and record how to show them: a display matrix in the
container (MP4/MOV), EXIF orientation in a JPEG, or the legacy ``rotate`` stream tag. FFmpeg hands
the first two to PyAV as the frame's ``DISPLAYMATRIX`` side data; `frame_orientation` reads that (or
the tag) and `orient_frame` applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import av
import numpy as np
import torch

__all__ = ["frame_orientation", "orient_frame", "orientation_from_display_matrix"]


def orient_frame(image: torch.Tensor, rotation: int, mirrored: bool = False) -> torch.Tensor:
    """Rotate ``image`` ``(..., H, W)`` by ``rotation`` degrees counter-clockwise, then mirror it.

    ``rotation`` must be a multiple of 90 (any sign). With ``mirrored`` the rotated image is flipped
    left-right. Returns ``(..., H, W)`` or ``(..., W, H)`` (a view where possible; not copied).
    """
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    k = (rotation // 90) % 4
    out = torch.rot90(image, k, dims=(-2, -1)) if k else image
    return out.flip(-1) if mirrored else out


def orientation_from_display_matrix(matrix: Sequence[int]) -> tuple[int, bool, bool]:
    """Decode FFmpeg's ``DISPLAYMATRIX`` (9 int32, 16.16 fixed point, row-major) into an orientation.

    FFmpeg maps a stored pixel ``(p, q)`` (column, row) to its displayed place
    ``(a*p + c*q + x, b*p + d*q + y)`` with ``matrix = [a, b, u, c, d, v, x, y, w]``; only the signs
    and the pattern of the 2x2 part matter for a right-angle orientation.

    Returns:
        ``(rotation, mirrored, exact)`` for `orient_frame`. ``exact`` is False when the matrix is
        not a right-angle rotation/flip (e.g. 45 degrees); the nearest right-angle one is returned.
    """
    if len(matrix) != 9:
        raise ValueError(f"a display matrix has 9 entries, got {len(matrix)}")
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    straight, crossed = abs(a) + abs(d), abs(b) + abs(c)
    if straight + crossed == 0:  # degenerate: nothing sensible to apply
        return 0, False, False
    # Where the 2x2 part sends a small asymmetric probe image, then which dihedral element that is.
    probe = torch.arange(6).reshape(2, 3)
    if straight >= crossed:
        target = probe.flip(-1) if a < 0 else probe
        target = target.flip(-2) if d < 0 else target
        exact = crossed <= 1e-3 * straight
    else:  # displayed row follows the stored column: a transpose, then flips
        target = probe.T
        target = target.flip(-2) if b < 0 else target
        target = target.flip(-1) if c < 0 else target
        exact = straight <= 1e-3 * crossed
    for mirrored in (False, True):
        for rotation in (0, 90, 180, 270):
            candidate = orient_frame(probe, rotation, mirrored)
            if candidate.shape == target.shape and torch.equal(candidate, target):
                return rotation, mirrored, exact
    raise AssertionError("unreachable: the eight right-angle orientations cover every sign pattern")


def _display_matrix(frame: av.VideoFrame) -> list[int] | None:
    side = frame.side_data  # may raise ValueError, see frame_orientation
    try:
        data = bytes(side["DISPLAYMATRIX"])
    except KeyError:
        return None
    return np.frombuffer(data, dtype=np.int32)[:9].tolist()


def frame_orientation(frame: av.VideoFrame, metadata: Mapping[str, str]) -> tuple[int, bool, str | None]:
    """``(rotation, mirrored, warning)`` to show ``frame`` upright.

    Sources, in order: the frame's ``DISPLAYMATRIX`` side data (FFmpeg puts the container's display
    matrix / EXIF orientation there); `VideoFrame.rotation` when PyAV cannot list the side data;
    the legacy ``rotate`` stream tag (clockwise degrees) when there is no matrix at all.
    """
    try:
        matrix = _display_matrix(frame)
    except ValueError:
        # PyAV 18 cannot wrap side-data types newer than it knows (FFmpeg 8 attaches EXIF to JPEG
        # frames); frame.rotation still reads the matrix, but without any mirroring.
        return int(round(frame.rotation / 90.0)) * 90 % 360, False, None
    if matrix is not None:
        rotation, mirrored, exact = orientation_from_display_matrix(matrix)
        note = None
        if not exact:
            note = (
                f"the display matrix rotates by {frame.rotation} degrees, not a multiple of 90; "
                f"using the nearest right angle ({rotation} degrees)"
            )
        return rotation, mirrored, note
    tag = metadata.get("rotate")
    if tag:
        try:
            clockwise = float(tag)
        except ValueError:
            return 0, False, f"ignoring unreadable 'rotate' tag {tag!r}"
        return int(-round(clockwise / 90.0)) * 90 % 360, False, None
    return 0, False, None
