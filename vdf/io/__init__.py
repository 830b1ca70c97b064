"""Files in and out: videos and image sequences read frame by frame, depth written atomically.

| module | what |
|---|---|
| `vdf.io.inputs` | what one input is, `find_inputs` over a folder tree, `output_name`, `VideoInputError` |
| `vdf.io.video` | `VideoSource`: one video or image folder decoded frame by frame, `VideoInfo`, `output_size` |
| `vdf.io.orientation` | display matrices and EXIF orientation: frames shown upright |
| `vdf.io.depth` | `DepthVideoWriter`: npz, 16-bit PNG, EXR, colourised mp4, per-video manifest; resume helpers |
| `vdf.io.colour` | colormaps as lookup tables, one robust colour range per video |
| `vdf.io.codecs` | the one video-codec choice, `write_mp4`, single-image encoding |
| `vdf.io.manifest` | `RunManifest`: the ``manifest.json`` of a predict output folder |
| `vdf.io.prefetch` | `ReadAhead` and `SerialWorker`: decoding and writing in bounded background threads |
| `vdf.io.atomic` | temporary names, atomic replacement, fsync, JSON written atomically |
| `vdf.io.episodes` | `write_episodes`: ``<name>.mp4`` + ``<name>_gt.npz`` depth-annotated videos |

Nothing here imports Lightning or the tasks: every reader and writer works from plain Python.
"""

from vdf.io.atomic import write_json_atomic
from vdf.io.codecs import encoder_available, video_codec, write_mp4
from vdf.io.colour import colorize_disparity
from vdf.io.depth import DepthVideoWriter, OutputOptions, clean_partial, output_names, outputs_complete
from vdf.io.episodes import write_episodes
from vdf.io.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoInputError, find_inputs, output_name
from vdf.io.manifest import RunManifest
from vdf.io.video import VideoInfo, VideoSource, output_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DepthVideoWriter",
    "OutputOptions",
    "RunManifest",
    "VideoInfo",
    "VideoInputError",
    "VideoSource",
    "clean_partial",
    "colorize_disparity",
    "encoder_available",
    "find_inputs",
    "output_name",
    "output_names",
    "output_size",
    "outputs_complete",
    "video_codec",
    "write_episodes",
    "write_json_atomic",
    "write_mp4",
]
