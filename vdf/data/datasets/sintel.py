"""`Sintel`: MPI Sintel training sequences with the Sintel depth/camera data.

Layout (``root`` merges the Sintel images and the "depth training" download, MPI-Sintel-depth-training-20150305)::

    root/training/clean/<seq>/frame_0001.png          RGB (``image_dir``; or ``training/final``)
    root/training/depth/<seq>/frame_0001.dpt          depth, Sintel ``.dpt`` (``depth_dir``)
    root/training/camdata_left/<seq>/frame_0001.cam   optional camera, Sintel ``.cam`` (``cam_dir``)

Frames are sorted as the benchmark does (by name, then by the last 4 digits) and RGB/depth are paired
by position; ``frame_index`` is the 0-based position in the sequence (``frame_0001`` -> 0). Sintel has
no invalid flag: ``valid`` = finite and > 0; far/sky pixels stay valid and are removed by the
metric's ``depth < max_depth`` (70) mask. DepthCrafter uses all 23 sequences, at most 50 frames
(all of them), no crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_sort

TAG_FLOAT = 202021.25  # "PIEH" read as a little-endian float32


def _check_tag(data: bytes, path: Path, kind: str) -> None:
    if len(data) < 4:
        raise ValueError(f"Sintel: {str(path)!r} is truncated ({len(data)} bytes; no {kind} header)")
    tag = np.frombuffer(data[:4], dtype="<f4")[0]
    if tag != np.float32(TAG_FLOAT):
        raise ValueError(
            f"Sintel: {str(path)!r} has a bad tag {tag!r} (expected {TAG_FLOAT}); not a {kind} file or wrong endianness"
        )


def _read_tagged(path: str | Path, kind: str, what: str) -> tuple[bytes, Path]:
    """The bytes of a Sintel SDK file after checking that it exists and starts with the tag."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Sintel: {what} file {str(path)!r} does not exist") from error
    _check_tag(data, path, kind)
    return data, path


def read_dpt(path: str | Path) -> np.ndarray:
    """A Sintel ``.dpt`` depth file as float32 ``(height, width)``.

    Format: little-endian float32 tag 202021.25, int32 width, int32 height, then width*height float32
    depths row-major. Errors name the file: bad tag, bad size, truncated or oversized file.
    """
    data, path = _read_tagged(path, ".dpt", "depth")
    if len(data) < 12:
        raise ValueError(f"Sintel: {str(path)!r} is truncated ({len(data)} bytes; header needs 12)")
    width, height = (int(v) for v in np.frombuffer(data[4:12], dtype="<i4"))
    if not (width > 0 and height > 0 and width * height < 1e8):
        raise ValueError(f"Sintel: {str(path)!r} has a wrong size {width}x{height} (needs 0 < w, 0 < h, w*h < 1e8)")
    expected = 12 + 4 * width * height
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"Sintel: {str(path)!r} is {problem}: {len(data)} bytes for a {width}x{height} depth "
            f"map (expected {expected})"
        )
    return np.frombuffer(data, dtype="<f4", offset=12).reshape(height, width).astype(np.float32)


def read_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A Sintel ``.cam`` file as ``(K (3,3), cam_to_world (4,4))``, float64.

    Format: float32 tag 202021.25, 9 float64 intrinsics M (3x3), 12 float64 extrinsics N (3x4,
    world -> camera, ``x = M N X``). The pose is ``inv([N; 0 0 0 1])`` (camera -> world), as VDA does.
    """
    data, path = _read_tagged(path, ".cam", "camera")
    expected = 4 + 8 * (9 + 12)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than expected"
        raise ValueError(f"Sintel: {str(path)!r} is {problem}: {len(data)} bytes (expected {expected})")
    values = np.frombuffer(data, dtype="<f8", offset=4)
    k = values[:9].reshape(3, 3).copy()
    world_to_cam = np.eye(4)
    world_to_cam[:3] = values[9:].reshape(3, 4)
    return k, np.linalg.inv(world_to_cam)


class Sintel(PerFrameDataset):
    """MPI Sintel training sequences (DepthCrafter benchmark: all 23, <= 50 frames, no crop).

    Args:
        root: folder holding ``image_dir``, ``depth_dir`` and (optionally) ``cam_dir``.
        sequences: sequence names; None = every folder in ``depth_dir`` (the 23 training sequences).
        image_dir: RGB folder relative to root (``training/clean`` or ``training/final``).
        depth_dir: ``.dpt`` folder relative to root.
        cam_dir: ``.cam`` folder relative to root; cameras are returned when it exists.
        start: first frame kept (a position in the sorted frame list).
        stride: keep every ``stride``-th frame.
        max_frames: keep at most this many frames (published ``seq_len`` 50); None = all.
        shift_intrinsics: kept for a uniform interface (Sintel is not cropped).
        inference_size: fixed ``(H, W)`` for models that honour protocol sizes (DepthCrafter's
            benchmark: 448x1024; FlashDepth's: 434x1022).
        eval_space: space of the evaluation fit for this dataset (ChronoDepth: ``depth``); None =
            the datamodule's ``eval_space``.
        boundary_f1: always score boundary F1 on it (FlashDepth's protocol).
        name: dataset name in logs and metric keys.
    """

    max_depth = 70.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        image_dir: str = "training/clean",
        depth_dir: str = "training/depth",
        cam_dir: str = "training/camdata_left",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = 50,
        shift_intrinsics: bool = True,
        inference_size: tuple[int, int] | None = (448, 1024),
        eval_space: str | None = None,
        boundary_f1: bool = False,
        name: str = "sintel",
    ):
        self.image_dir, self.depth_dir, self.cam_dir = image_dir, depth_dir, cam_dir
        self.inference_size = tuple(inference_size) if inference_size is not None else None
        self.eval_space, self.boundary_f1 = eval_space, boundary_f1
        super().__init__(
            root, name, sequences, start=start, stride=stride, max_frames=max_frames, shift_intrinsics=shift_intrinsics
        )

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        depth_root = self.root / self.depth_dir
        if not depth_root.is_dir():
            raise FileNotFoundError(
                f"Sintel: depth folder {str(depth_root)!r} does not exist; expected root/{self.depth_dir}/<seq>/*.dpt "
                f"and root/{self.image_dir}/<seq>/*.png (MPI Sintel + Sintel depth training data)"
            )
        if names is None:
            names = sorted(p.name for p in depth_root.iterdir() if p.is_dir())
            if not names:
                raise FileNotFoundError(f"Sintel: no sequence folders in {str(depth_root)!r}")
        out = []
        for seq in names:
            image_folder = self.root / self.image_dir / seq
            depths = frame_sort((depth_root / seq).glob("*.dpt"))
            rgbs = frame_sort(image_folder.glob("*.png"))
            if not depths:
                raise FileNotFoundError(f"Sintel: no .dpt files in {str(depth_root / seq)!r}")
            if len(rgbs) != len(depths):
                raise ValueError(
                    f"Sintel: sequence {seq!r} has {len(rgbs)} RGB frames in {str(image_folder)!r} but "
                    f"{len(depths)} depth files in {str(depth_root / seq)!r}; every frame needs both "
                    "(missing pair)"
                )
            cam_folder = self.root / self.cam_dir / seq
            cams = cam_folder.is_dir()
            frames = [
                Frame(position, rgb, depth, {"cam": cam_folder / f"{depth.stem}.cam"} if cams else {})
                for position, (rgb, depth) in enumerate(zip(rgbs, depths))
            ]
            out.append(FrameSequence(seq, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_dpt(frame.depth)

    def read_camera(self, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        return read_cam(frame.files["cam"]) if "cam" in frame.files else (None, None)
