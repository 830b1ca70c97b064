"""`UrbanSyn`: UrbanSyn synthetic driving frames, as FlashDepth's test set reads them.

Layout (``root`` = FlashDepth's ``data_root``; ``folder`` = ``urbansyn``)::

    root/urbansyn/<i>/rgb/rgb_<n>.png          RGB (2048x1024); scene folders are named by integers
    root/urbansyn/<i>/depth/depth_<n>.exr      one-channel OpenEXR, value · 1e5 = metres
    root/urbansyn/<i>/ss/ss_<n>.png            single-channel semantic labels; class 10 = sky

Scene folders are sorted by their integer name, frames by number; FlashDepth keeps the first 1000
frames of each. Depth is ``exr · depth_scale`` (1e5, UrbanSyn's documentation as FlashDepth reads
it); sky pixels (label 10) are invalid, as are non-finite or non-positive depths.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.flashdepth_sets import FlashDepthTestSet
from vdf.data.datasets.frames import Frame, FrameSequence, numbered_frames
from vdf.data.readers import read_exr

SKY_LABEL = 10


def read_labels(path) -> np.ndarray:
    """A single-channel label PNG as an integer ``(H,W)`` array; errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            labels = np.asarray(image)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"UrbanSyn: semantic label file {str(path)!r} does not exist") from error
    except Exception as error:
        raise ValueError(f"UrbanSyn: cannot read semantic labels {str(path)!r}: {error}") from error
    if labels.ndim != 2:
        raise ValueError(f"UrbanSyn: {str(path)!r} has shape {labels.shape}; expected a single-channel label map")
    return labels


class UrbanSyn(FlashDepthTestSet):
    """UrbanSyn (FlashDepth test set: every scene, first 1000 frames, inference 1022x2044).

    Args:
        root: FlashDepth's ``data_root`` (the folder holding ``folder``).
        sequences: scene folder names; None = every scene, sorted by integer name.
        folder: the dataset's folder under ``root``.
        start, stride: frame positions ``[start::stride]``.
        max_frames: keep at most this many frames per scene (FlashDepth: 1000); None = all.
        depth_scale: metres per EXR unit (1e5).
        inference_size: FlashDepth's evaluation size ``(H, W)`` ('2k': 1022x2044).
        name: dataset name in logs and metric keys.
    """

    layout = "<i>/{rgb/rgb_<n>.png, depth/depth_<n>.exr, ss/ss_<n>.png}"

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        folder: str = "urbansyn",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = 1000,
        depth_scale: float = 1e5,
        inference_size: tuple[int, int] | None = (1022, 2044),
        name: str = "urbansyn",
    ):
        self.depth_scale = float(depth_scale)
        super().__init__(root, name, sequences, folder, start, stride, max_frames, inference_size)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        base = self.dataset_folder()
        if names is None:
            scenes = [p.name for p in base.iterdir() if p.is_dir()]
            try:
                names = sorted(scenes, key=int)
            except ValueError as error:
                raise ValueError(f"UrbanSyn: {str(base)!r} holds a scene folder not named by an integer") from error
        out = []
        for scene in names:
            folder = base / scene
            frames = numbered_frames(
                (folder / "rgb").glob("rgb_*.png"),
                lambda p, n: folder / "depth" / p.name.replace("rgb_", "depth_").replace(".png", ".exr"),
            )
            if not frames:
                raise FileNotFoundError(f"UrbanSyn: no rgb/rgb_*.png in {str(folder)!r}")
            for frame in frames:
                frame.files = {"ss": folder / "ss" / frame.rgb.name.replace("rgb_", "ss_")}
            out.append(FrameSequence(scene, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        depth = read_exr(frame.depth).astype(np.float32) * np.float32(self.depth_scale)
        labels = read_labels(frame.files["ss"])
        if labels.shape != depth.shape:
            raise ValueError(
                f"UrbanSyn: labels {str(frame.files['ss'])!r} are {labels.shape}, depth {str(frame.depth)!r} is {depth.shape}"
            )
        depth[labels == SKY_LABEL] = 0.0
        return depth
