"""File readers shared by the dataset readers: images, 16-bit PNG, OpenEXR, HDF5, NPY and text tables.

Each returns a numpy array and raises errors that name the file and the problem:
`FileNotFoundError` for a missing file, `ValueError` for one that cannot be decoded or holds the
wrong kind of data (`KeyError` for an absent HDF5 key). Nothing here knows a dataset's layout or
units; the readers in `vdf.data.datasets` do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["image_size", "read_exr", "read_hdf5", "read_npy", "read_png16", "read_rgb", "read_scaled_png", "read_table"]

PathLike = str | os.PathLike


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    return path


def _check_ndim(array: np.ndarray, ndim: int | None, what: str) -> np.ndarray:
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{what} has shape {array.shape}; expected {ndim} dimensions")
    return array


def read_rgb(path: PathLike) -> np.ndarray:
    """An 8-bit image (PNG, JPEG, ...) as uint8 ``(H,W,3)`` RGB."""
    path = _existing(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as error:
        raise ValueError(f"cannot read image {str(path)!r} (truncated or corrupt?): {error}") from error


def image_size(path: PathLike) -> tuple[int, int]:
    """``(H, W)`` from an image header, without decoding pixels."""
    path = _existing(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:
        raise ValueError(f"cannot read the image header of {str(path)!r}: {error}") from error
    return height, width


def read_png16(path: PathLike) -> np.ndarray:
    """A single-channel 16-bit PNG as uint16 ``(H,W)``.

    The mode is checked before decoding, so an 8-bit or RGB image is refused as such rather than
    converted.
    """
    path = _existing(path)
    try:
        image = Image.open(path)
    except Exception as error:
        raise ValueError(f"cannot read PNG {str(path)!r} (truncated or corrupt?): {error}") from error
    with image:
        mode = image.mode
        if not (mode.startswith("I;16") or (mode == "I" and image.format == "PNG")):
            raise ValueError(f"{str(path)!r} is not a 16-bit single-channel PNG (PIL mode {mode!r})")
        try:
            array = np.array(image)
        except Exception as error:
            raise ValueError(f"cannot read PNG {str(path)!r} (truncated or corrupt?): {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{str(path)!r} is not a 16-bit single-channel PNG (shape {array.shape})")
    if array.dtype != np.uint16:
        # PIL reads some 16-bit PNGs as int32 ("I"): the values must still fit 16 bits.
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"{str(path)!r} is not a 16-bit single-channel PNG (values outside 0..65535)")
        array = array.astype(np.uint16)
    return array


def read_scaled_png(path: PathLike, scale: float, check_range: bool = False) -> np.ndarray:
    """Depth stored as ``metres · scale`` in a 16-bit PNG -> float32 ``(H,W)`` metres, 0 where the PNG is 0.

    ``check_range`` refuses a file whose maximum is <= 255: an 8-bit depth map saved as 16-bit
    passes the mode check (the published KITTI and Bonn extraction asserts ``max > 255``).
    """
    raw = read_png16(path)
    if check_range and raw.max() <= 255:
        raise ValueError(
            f"{str(path)!r} has maximum value {raw.max()} <= 255; expected 16-bit depth values "
            "(the published extraction asserts max > 255)"
        )
    depth = (raw.astype(np.float64) / scale).astype(np.float32)
    return np.where(raw > 0, depth, np.float32(0.0))


def read_exr(path: PathLike) -> np.ndarray:
    """The single channel of an OpenEXR file (the G channel of an RGB(A) one) as float32 ``(H,W)``.

    Decoded with PyAV's ``exr`` decoder, which outputs ``grayf32le`` for one-channel files and
    ``gbrpf32le`` / ``gbrapf32le`` (plane 0 = G) for RGB(A) files, half or float alike.
    """
    import av

    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration) as error:
        raise ValueError(f"cannot decode OpenEXR file {str(path)!r}: {error}") from error
    name = frame.format.name
    if name not in ("grayf32le", "gbrpf32le", "gbrapf32le"):
        raise ValueError(f"OpenEXR file {str(path)!r} decoded to unsupported pixel format {name!r}")
    plane = frame.planes[0]  # grey, or G of GBR(A)
    height, width = frame.height, frame.width
    data = np.frombuffer(bytes(plane), dtype="<f4").reshape(height, plane.line_size // 4)[:, :width]
    return data.astype(np.float32)


def read_hdf5(path: PathLike, key: str, ndim: int | None = None) -> np.ndarray:
    """Dataset ``key`` of an HDF5 file as float32; ``ndim`` checks its number of dimensions."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a dependency
        raise ImportError(f"reading {str(path)!r} needs h5py (pip install h5py)") from error
    path = _existing(path)
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise KeyError(f"HDF5 file {str(path)!r} has no key {key!r} (keys: {sorted(f.keys())})")
            array = np.asarray(f[key], dtype=np.float32)
    except KeyError:
        raise
    except Exception as error:
        raise ValueError(f"cannot read HDF5 file {str(path)!r}: {error}") from error
    return _check_ndim(array, ndim, f"{str(path)!r} key {key!r}")


def read_npy(path: PathLike, ndim: int | None = None) -> np.ndarray:
    """The array of a ``.npy`` file (no pickled objects); ``ndim`` checks its number of dimensions."""
    path = _existing(path)
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"cannot read NPY file {str(path)!r}: {error}") from error
    return _check_ndim(array, ndim, repr(str(path)))


def read_table(path: PathLike) -> np.ndarray:
    """A whitespace-separated text table of numbers as float64 ``(rows, columns)`` (one row: ``(1, C)``)."""
    path = _existing(path)
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"cannot parse the number table {str(path)!r}: {error}") from error
