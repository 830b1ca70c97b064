"""Live input: a stream served on the loopback address is predicted as it arrives (FlashDepth, `Streaming`).

The test process encodes synthetic frames as MPEG-TS and serves them over TCP in small timed
chunks, as a camera or an encoder pushing a live stream would.
"""

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
from recipes import tiny_args

from vdf.cli import main
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io import outputs_complete
from vdf.io.live import LiveSource, is_live_input

FLASH = tiny_args("flashdepth", "s")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def mpegts(frames: int, seed: int = 3) -> bytes:
    """``frames`` synthetic-world frames (32x48) as an MPEG-TS byte stream at 10 fps."""
    video = SyntheticWorld(num_episodes=1, num_frames=frames, height=32, width=48, seed=seed)[0]["video"]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for frame in video:
            rgb = (frame.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


class LoopbackStream:
    """Serves ``data`` to one TCP client on 127.0.0.1 in chunks of ``chunk`` bytes every ``delay``
    seconds; ``repeat`` sends it again and again until ``seconds`` have passed (a live feed)."""

    def __init__(self, data: bytes, chunk: int = 2048, delay: float = 0.02, repeat: bool = False, seconds: float = 60):
        self.data, self.chunk, self.delay, self.repeat, self.seconds = data, chunk, delay, repeat, seconds
        self.sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(seconds)
        self.url = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        end = time.time() + self.seconds
        with conn:
            try:
                while time.time() < end:
                    for i in range(0, len(self.data), self.chunk):
                        conn.sendall(self.data[i : i + self.chunk])
                        self.sent += 1
                        time.sleep(self.delay)
                    if not self.repeat:
                        break
            except OSError:
                pass  # the client went away
        self.server.close()


def test_what_is_live():
    assert all(map(is_live_input, ["-", "rtsp://cam/1", "http://127.0.0.1:8000/x.ts", "/dev/video0", "tcp://h:1"]))
    assert not any(map(is_live_input, ["videos", "clip.mp4", None]))


def test_a_stream_is_predicted_as_it_arrives_and_equals_the_same_bytes_as_a_file(in_tmp_cwd):
    data = mpegts(12)
    (in_tmp_cwd / "stream.ts").write_bytes(data)
    served = LoopbackStream(data)
    main(["predict", *FLASH, *QUIET, "--input", served.url, "--output", "live"])
    main(["predict", *FLASH, *QUIET, "--input", "stream.ts", "--output", "file"])
    run = json.loads((in_tmp_cwd / "live" / "manifest.json").read_text())
    [entry] = run["videos"]
    assert entry["status"] == "ok" and entry["frames"] == 12 and entry["name"].startswith("stream_")
    assert outputs_complete(in_tmp_cwd / "live", entry["name"])
    with (
        np.load(in_tmp_cwd / "live" / f"{entry['name']}.npz") as live,
        np.load(in_tmp_cwd / "file" / "stream.ts.npz") as f,
    ):
        assert live["frame_index"].tolist() == list(range(12))
        assert np.array_equal(live["disparity"], f["disparity"])


def test_a_live_input_is_read_once():
    served = LoopbackStream(mpegts(4))
    source = LiveSource(served.url)
    assert len(list(source.frames())) == 4
    with pytest.raises(ValueError, match="read only once"):
        next(source.frames())


def test_ctrl_c_on_a_live_stream_keeps_every_frame_so_far(tmp_path):
    served = LoopbackStream(mpegts(10), repeat=True, seconds=90)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vdf", "predict", *FLASH, *QUIET, "--input", served.url, "--output", "out"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        out = tmp_path / "out"
        # The stream is being consumed and frames are predicted: the writer holds some (its
        # temporary files exist; frames are read ahead of the model, so reading alone says less).
        while served.sent < 40 or not (out.is_dir() and any(p.name.startswith(".") for p in out.iterdir())):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "the stream was never read"
            time.sleep(0.1)
        time.sleep(1.0)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stopped = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert stopped < 15, err[-2000:]
    run = json.loads((tmp_path / "out" / "manifest.json").read_text())
    [entry] = run["videos"]
    assert entry["status"] == "ok" and entry["frames"] > 0, err[-2000:]
    assert outputs_complete(tmp_path / "out", entry["name"])
    manifest = json.loads((tmp_path / "out" / f"{entry['name']}.json").read_text())
    assert manifest["stopped_by"] == "SIGINT received"
    with np.load(tmp_path / "out" / f"{entry['name']}.npz") as npz:
        assert npz["disparity"].shape[0] == entry["frames"]
