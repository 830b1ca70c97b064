"""`VideoDepthFolder`: your own videos with depth, in one documented layout (docs/datasets/generic.md).

Layout (one item = one sequence folder; sequence folders may sit at any depth under ``root``)::

    root/<sequence>/rgb/000000.png ...        frames (PNG or JPEG), ordered by the number in their names
    root/<sequence>/rgb.mp4                   ... or one video instead of the rgb/ folder
    root/<sequence>/depth/000000.png ...      per-frame depth: 16-bit PNG (value / png_scale metres),
                                              EXR, NPY, or NPZ (key "depth", or its only array)
    root/<sequence>/disparity/000000.* ...    ... or disparity instead (same formats, key "disparity"):
                                              depth = disparity_scale / disparity
    root/<sequence>/mask/000000.png ...       optional validity mask: 0 = invalid, anything else = valid
    root/<sequence>/intrinsics.txt            optional: "fx fy cx cy", one row shared or one per frame
    root/<sequence>/poses.txt                 optional: cam_to_world, 16 numbers per frame (row-major
                                              4x4, OpenCV axes: x right, y down, z forward)

Frames are paired with depth, disparity and mask files by the number in their names (with a
video, frame ``k`` of the video pairs with the files numbered ``k``). Depth (or disparity) of 0,
negative, NaN or infinite is invalid, as is every pixel whose mask is 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_number, pinhole, set_cameras
from vdf.data.readers import read_exr, read_npy, read_png16, read_rgb, read_table

__all__ = ["DEPTH_EXTENSIONS", "VideoDepthFolder", "read_depth_file"]

#: Per-frame depth / disparity formats, in the order they are looked for.
DEPTH_EXTENSIONS = (".png", ".exr", ".npy", ".npz")
_IMAGES = (".png", ".jpg", ".jpeg")
_VIDEOS = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def read_depth_file(path: Path, png_scale: float, key: str = "depth") -> np.ndarray:
    """One depth (or disparity) map as float32 ``(H,W)``: a 16-bit PNG divided by ``png_scale``,
    an EXR, a 2-D NPY, or an NPZ's array ``key`` (or its only array)."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return (read_png16(path).astype(np.float64) / png_scale).astype(np.float32)
    if suffix == ".exr":
        return read_exr(path)
    if suffix == ".npy":
        return read_npy(path, ndim=2).astype(np.float32)
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if key in names:
                    array = archive[key]
                elif len(names) == 1:
                    array = archive[names[0]]
                else:
                    raise ValueError(f"NPZ file {str(path)!r} has arrays {names}: name one {key!r}")
        except (OSError, EOFError) as error:
            raise ValueError(f"cannot read NPZ file {str(path)!r}: {error}") from error
        if array.ndim != 2:
            raise ValueError(f"{str(path)!r}: array {key!r} has shape {array.shape}, expected (H, W)")
        return array.astype(np.float32)
    raise ValueError(f"{str(path)!r}: unsupported depth format {suffix!r} (use one of {DEPTH_EXTENSIONS})")


def _numbered(folder: Path, extensions: tuple[str, ...]) -> dict[int, Path]:
    """``{number: file}`` of the files of ``folder`` with these extensions (two files with one
    number is an error naming both)."""
    out: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        number = frame_number(path)
        if number in out:
            raise ValueError(f"{str(out[number])!r} and {str(path)!r} both hold frame {number}; keep one")
        out[number] = path
    return out


class VideoDepthFolder(PerFrameDataset):
    """Your own depth-annotated videos in the layout of the module docstring.

    Args:
        root: folder holding the sequence folders.
        name: dataset name in logs and metric keys (and the ``dataset`` of every sample).
        sequences: keep only these sequences (their paths relative to ``root``).
        exclude: drop these sequences.
        split: ``train`` or ``held_out``: a split of the folder by sequence (sorted by name,
            every ``held_out_every``-th one is held out, the last of each group: positions
            ``k-1, 2k-1, ...``); None keeps every sequence. The two splits never share a sequence.
        held_out_every: ``k`` of ``split``.
        png_scale: a 16-bit PNG stores ``depth · png_scale`` (1000: millimetres, 256: KITTI-style).
        disparity_scale: with ``disparity/`` files, ``depth = disparity_scale / disparity``
            (e.g. focal length in pixels × baseline in metres; 1 when the files hold 1/metres).
        max_depth: training cap in metres (None: every valid depth is kept).
        size: optional output ``(H, W)``.
        start, stride, max_frames: frame selection per sequence (`PerFrameDataset`).
    """

    def __init__(
        self,
        root: str,
        name: str = "video_depth_folder",
        sequences: list[str] | None = None,
        exclude: list[str] | None = None,
        png_scale: float = 1000.0,
        disparity_scale: float = 1.0,
        max_depth: float | None = None,
        size: tuple[int, int] | None = None,
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        split: str | None = None,
        held_out_every: int = 5,
    ):
        if split not in (None, "train", "held_out"):
            raise ValueError(f"{name}: split must be 'train', 'held_out' or None, got {split!r}")
        if held_out_every < 2:
            raise ValueError(f"{name}: held_out_every must be >= 2, got {held_out_every}")
        self.split, self.held_out_every = split, int(held_out_every)
        if png_scale <= 0 or disparity_scale <= 0:
            raise ValueError(f"{name}: png_scale and disparity_scale must be > 0")
        self.png_scale = float(png_scale)
        self.disparity_scale = float(disparity_scale)
        self.exclude = list(exclude or [])
        self._videos: dict[Path, list[np.ndarray]] = {}
        super().__init__(
            root, name, sequences, start=start, stride=stride, max_frames=max_frames, size=size, max_depth=max_depth
        )
        names = {s.name for s in self.sequences}
        unknown = [s for s in self.exclude if s not in names and s not in {q.name for q in self._excluded}]
        if unknown:
            raise ValueError(f"{name}: excluded sequence(s) {unknown} not found under {str(self.root)!r}")

    # -- layout --------------------------------------------------------------------------------
    def _sequence_dirs(self) -> list[Path]:
        found = set()
        for rgb in list(self.root.rglob("rgb")) + [p for ext in _VIDEOS for p in self.root.rglob(f"rgb{ext}")]:
            if rgb.is_dir() or rgb.is_file():
                found.add(rgb.parent)
        return sorted(found)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out, self._excluded = [], []
        for position, folder in enumerate(self._sequence_dirs()):
            name = folder.relative_to(self.root).as_posix() if folder != self.root else "."
            held_out = position % self.held_out_every == self.held_out_every - 1
            if self.split is not None and held_out != (self.split == "held_out"):
                continue
            sequence = FrameSequence(name, self._frames(folder))
            (self._excluded if name in self.exclude else out).append(sequence)
        return out

    def _frames(self, folder: Path) -> list[Frame]:
        kinds = [k for k in ("depth", "disparity") if (folder / k).is_dir()]
        if len(kinds) != 1:
            raise FileNotFoundError(
                f"{self.name}: sequence folder {str(folder)!r} needs exactly one of depth/ and disparity/ "
                f"(found {kinds or 'neither'})"
            )
        kind = kinds[0]
        targets = _numbered(folder / kind, DEPTH_EXTENSIONS)
        masks = _numbered(folder / "mask", (".png",)) if (folder / "mask").is_dir() else None
        videos = [folder / f"rgb{ext}" for ext in _VIDEOS if (folder / f"rgb{ext}").is_file()]
        if (folder / "rgb").is_dir():
            images = _numbered(folder / "rgb", _IMAGES)
        elif videos:
            count = len(self._decode(videos[0]))
            images = {k: videos[0] for k in range(count)}
        else:
            raise FileNotFoundError(f"{self.name}: {str(folder)!r} has no rgb/ folder or rgb video")
        frames = []
        for number in sorted(images):
            if number not in targets:
                raise FileNotFoundError(
                    f"{self.name}: frame {number} of {str(images[number])!r} has no {kind} file in "
                    f"{str(folder / kind)!r} (expected a number-{number} file, one of {DEPTH_EXTENSIONS})"
                )
            files = {kind: targets[number]}
            if masks is not None:
                if number not in masks:
                    raise FileNotFoundError(f"{self.name}: frame {number} has no mask in {str(folder / 'mask')!r}")
                files["mask"] = masks[number]
            frames.append(Frame(number, images[number], targets[number], files=files))
        if frames:
            intrinsics, poses = self._cameras(folder, len(frames))
            set_cameras(frames, intrinsics=intrinsics, cam_to_world=poses)
        return frames

    def _cameras(self, folder: Path, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        intrinsics = poses = None
        path = folder / "intrinsics.txt"
        if path.is_file():
            table = read_table(path)
            if table.shape[1] != 4 or table.shape[0] not in (1, count):
                raise ValueError(
                    f"{self.name}: {str(path)!r} has {table.shape[0]} rows of {table.shape[1]} numbers; expected "
                    f"rows 'fx fy cx cy': one shared, or one per frame ({count})"
                )
            ks = np.stack([pinhole(*row) for row in table])
            intrinsics = ks[0] if len(ks) == 1 else ks
        path = folder / "poses.txt"
        if path.is_file():
            table = read_table(path)
            if table.shape != (count, 16):
                raise ValueError(
                    f"{self.name}: {str(path)!r} has {table.shape[0]} rows of {table.shape[1]} numbers; expected "
                    f"{count} rows (one per frame) of 16 (a row-major 4x4 cam_to_world)"
                )
            poses = table.reshape(count, 4, 4)
            if not np.allclose(poses[:, 3], [0.0, 0.0, 0.0, 1.0]):
                raise ValueError(f"{self.name}: {str(path)!r}: the last row of every 4x4 pose must be 0 0 0 1")
        return intrinsics, poses

    # -- files ---------------------------------------------------------------------------------
    def _decode(self, video: Path) -> list[np.ndarray]:
        """Every frame of ``video`` as uint8 ``(H,W,3)``: decoded once, the last video kept."""
        if video not in self._videos:
            from vdf.io import VideoSource

            frames = [
                (frame.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
                for _, frame in VideoSource(video).frames()
            ]
            if not frames:
                raise ValueError(f"{self.name}: video {str(video)!r} has no frames")
            self._videos = {video: frames}
        return self._videos[video]

    def read_image(self, frame: Frame) -> np.ndarray:
        if frame.rgb.suffix.lower() in _VIDEOS:
            return self._decode(frame.rgb)[frame.index]
        return read_rgb(frame.rgb)

    def native_size(self, sequence: FrameSequence) -> tuple[int, int]:
        first = sequence.frames[0]
        if first.rgb.suffix.lower() in _VIDEOS:
            return self._decode(first.rgb)[0].shape[:2]
        return super().native_size(sequence)

    def read_depth(self, frame: Frame) -> np.ndarray:
        disparity = "disparity" in frame.files
        values = read_depth_file(frame.depth, self.png_scale, "disparity" if disparity else "depth")
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(values > 0, self.disparity_scale / values, np.nan) if disparity else values
        depth = depth.astype(np.float32)
        mask_path = frame.files.get("mask")
        if mask_path is not None:
            from PIL import Image

            try:
                with Image.open(mask_path) as image:
                    mask = np.array(image.convert("L")) > 0
            except Exception as error:
                raise ValueError(f"cannot read mask {str(mask_path)!r}: {error}") from error
            if mask.shape != depth.shape:
                raise ValueError(
                    f"{self.name}: mask {str(mask_path)!r} is {mask.shape[0]}x{mask.shape[1]} but its depth "
                    f"{str(frame.depth)!r} is {depth.shape[0]}x{depth.shape[1]}"
                )
            depth = np.where(mask, depth, np.float32(np.nan))
        return depth


def write_folder(dataset, output: str | Path, png_scale: float = 1000.0) -> list[Path]:
    """Write every item of a `VideoDepthDataset` in the layout of this module (RGB PNGs, depth as
    16-bit PNGs of ``depth · png_scale``, ``intrinsics.txt`` and ``poses.txt`` when the samples
    carry cameras); returns the sequence folders. Depth beyond 16 bits or invalid is written 0."""
    from PIL import Image

    output = Path(output)
    folders = []
    for index in range(len(dataset)):
        sample = dataset[index]
        folder = output / f"seq_{index:04d}"
        (folder / "rgb").mkdir(parents=True, exist_ok=True)
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        video = (sample["video"].permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        depth = sample["depth"][:, 0].numpy() * png_scale
        depth = np.where(sample["valid"][:, 0].numpy() & (depth < 65535.5), np.round(depth), 0).astype(np.uint16)
        for t in range(video.shape[0]):
            Image.fromarray(video[t]).save(folder / "rgb" / f"{t:06d}.png")
            Image.fromarray(depth[t]).save(folder / "depth" / f"{t:06d}.png")
        if "intrinsics" in sample:
            k = sample["intrinsics"].double().numpy()
            np.savetxt(folder / "intrinsics.txt", np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], 1))
        if "cam_to_world" in sample:
            np.savetxt(folder / "poses.txt", sample["cam_to_world"].double().numpy().reshape(-1, 16))
        folders.append(folder)
    return folders


def main(
    output: str = "data/my_videos",
    sequences: int = 6,
    frames: int = 12,
    height: int = 64,
    width: int = 96,
    seed: int = 0,
) -> None:
    """Write synthetic-world episodes as a folder in this layout (to try a recipe without data):
    ``python -m vdf.data.datasets.generic --output data/my_videos --sequences 6``."""
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=sequences, num_frames=frames, height=height, width=width, seed=seed)
    folders = write_folder(world, output)
    print(f"wrote {len(folders)} sequences of {frames} frames ({height}x{width}) to {output}")


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main)
