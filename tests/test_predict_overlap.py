"""`vdf predict` with decoding and writing beside the model (`vdf.io.prefetch`).

Bounded read-ahead and writer queues, errors of the background threads given to the main thread
with the file named, the same files with and without the overlap, and an interruption while a
finished video is still being written in the background.
"""

import json
import signal
import threading

import numpy as np
import pytest
from recipes import tiny_args

from vdf.callbacks.interrupt import Interrupted
from vdf.callbacks.prediction_writer import DepthPredictionWriter
from vdf.cli import main
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io import DepthVideoWriter, VideoSource, outputs_complete, write_episodes
from vdf.io.prefetch import BackgroundError, ReadAhead, SerialWorker

TINY = tiny_args("dav2")
QUIET = ["--trainer.enable_progress_bar=false", "--writer.progress=false"]
SYNC = ["--data.prefetch_frames", "0", "--writer.queue_frames", "0"]


def vdf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vdf-")]


# -- the two primitives ---------------------------------------------------------------------------


def test_read_ahead_is_in_order_and_never_more_than_size_ahead():
    size, taken, produced, worst = 3, [0], [0], [0]
    full = threading.Event()

    def source():
        for i in range(40):
            produced[0] += 1
            worst[0] = max(worst[0], produced[0] - taken[0])
            if produced[0] == size + 1:
                full.set()
            yield i

    reader = ReadAhead(source, size, "clip.mp4")
    got = []
    for i in reader:
        taken[0] += 1  # counted as soon as the consumer has it
        got.append(i)
        if i == 0:
            # The reader fills its slots while the consumer holds the first item...
            assert full.wait(10), "the reader never ran ahead"
    assert got == list(range(40))
    # ... and never runs further: an unbounded reader would have read all 40 during that wait.
    assert worst[0] == size and reader.max_ahead == size
    assert not reader.alive


def test_read_ahead_gives_the_source_error_to_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise TypeError("bad frame")

    reader = ReadAhead(source, 4, "videos/clip.mp4")
    assert next(reader) == 1 and next(reader) == 2
    with pytest.raises(TypeError, match="bad frame") as caught:
        next(reader)
    assert "videos/clip.mp4" in caught.value.__notes__[0]
    assert not reader.alive
    with pytest.raises(StopIteration):
        next(reader)


def test_a_dropped_read_ahead_stops_and_closes_its_source_in_its_own_thread():
    closed_in = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed_in.append(threading.current_thread().name)

    reader = ReadAhead(endless, 2, "stream")
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    thread = reader._thread
    del reader
    thread.join(5)
    assert not thread.is_alive() and closed_in == ["vdf-read-ahead stream"]


def test_serial_worker_runs_in_order_within_its_bound_and_a_failure_surfaces_naming_the_file():
    worker = SerialWorker(2, "vdf-test-writer")
    done, gate = [], threading.Event()
    worker.submit(gate.wait, 10, label="a.mp4")
    worker.submit(done.append, 1, label="a.mp4")
    blocked = threading.Thread(target=worker.submit, args=(done.append, 2), kwargs={"label": "b.mp4"})
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a third call must wait while two are pending"
    gate.set()
    blocked.join(10)
    assert worker.wait() and done == [1, 2] and worker.max_seen == 2

    def disk_full():
        raise OSError("No space left on device")

    worker.submit(disk_full, label="videos/c.mp4")
    with pytest.raises(BackgroundError, match=r"^videos/c\.mp4: OSError: No space left") as caught:
        worker.wait()
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(BackgroundError):  # and again: a failed writer takes no more work
        worker.submit(done.append, 3)
    assert worker.close(5) and done == [1, 2]


def test_prefetched_frames_are_the_frames(tmp_path):
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=7, height=32, width=48, seed=3), tmp_path)
    path = tmp_path / "episode_00000.mp4"
    plain = list(VideoSource(path, stride=2).frames())
    source = VideoSource(path, stride=2, prefetch_frames=2)
    ahead = list(source.frames())
    assert [i for i, _ in ahead] == [i for i, _ in plain] == [0, 2, 4, 6]
    assert all(np.array_equal(a.numpy(), b.numpy()) for (_, a), (_, b) in zip(ahead, plain))
    with pytest.raises(ValueError, match="prefetch_frames must be >= 0"):
        VideoSource(path, prefetch_frames=-1)


# -- vdf predict ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap_inputs")
    for sub, seed, frames in (("a", 1, 6), ("b", 2, 5), ("c", 3, 4)):
        write_episodes(SyntheticWorld(num_episodes=1, num_frames=frames, height=32, width=48, seed=seed), root / sub)
    good = (root / "a" / "episode_00000.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    return root


def _predict(monkeypatch, folder, out, *extra):
    """One in-process run in which the writer fails on b's third frame; returns (results, threads seen)."""
    seen = {"decode": set(), "add": set(), "finish": set()}
    add, finish, decoded = DepthVideoWriter.add, DepthVideoWriter.finish, VideoSource._decoded

    def failing_add(self, index, *args, **kwargs):
        seen["add"].add(threading.current_thread().name)
        if self.name == "b__episode_00000" and index == 2:
            raise OSError("No space left on device")
        return add(self, index, *args, **kwargs)

    def tracked_finish(self, *args, **kwargs):
        seen["finish"].add(threading.current_thread().name)
        return finish(self, *args, **kwargs)

    def tracked_decoded(self):
        seen["decode"].add(threading.current_thread().name.split(" ")[0])
        yield from decoded(self)

    monkeypatch.setattr(DepthVideoWriter, "add", failing_add)
    monkeypatch.setattr(DepthVideoWriter, "finish", tracked_finish)
    monkeypatch.setattr(VideoSource, "_decoded", tracked_decoded)
    cli = main(["predict", *TINY, *QUIET, "--input", str(folder), "--output", str(out), *extra])
    monkeypatch.undo()
    writer = next(c for c in cli.trainer.callbacks if isinstance(c, DepthPredictionWriter))
    return writer.results, seen


def test_overlap_writes_the_same_files_reports_errors_by_file_and_leaves_no_thread(monkeypatch, folder, tmp_path):
    overlap, threads = _predict(monkeypatch, folder, tmp_path / "overlap")
    assert threads == {"decode": {"vdf-read-ahead"}, "add": {"vdf-writer-frames"}, "finish": {"vdf-writer-outputs"}}
    assert vdf_threads() == []
    sync, threads = _predict(monkeypatch, folder, tmp_path / "sync", *SYNC)
    assert threads == {"decode": {"MainThread"}, "add": {"MainThread"}, "finish": {"MainThread"}}

    # Recorded in input order, whatever thread finished what when.
    expected = [
        ("a__episode_00000", "ok"),
        ("b__episode_00000", "failed"),
        ("c__episode_00000", "ok"),
        ("truncated", "failed"),
    ]
    for results in (overlap, sync):
        assert [(r["name"], r["status"]) for r in results] == expected
        errors = {r["name"]: r["error"] for r in results if r["status"] == "failed"}
        # The writer's error (its thread) and the decoder's (its thread) name the file.
        assert errors["b__episode_00000"] == f"{folder / 'b' / 'episode_00000.mp4'}: No space left on device"
        assert errors["truncated"].startswith(f"{folder / 'truncated.mp4'}: truncated")
    assert [r["frames"] for r in overlap] == [r["frames"] for r in sync] and [r["frames"] for r in sync][:3] == [
        6,
        2,
        4,
    ]

    names = sorted(p.name for p in (tmp_path / "sync").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "overlap").iterdir())
    for name in ("a__episode_00000", "c__episode_00000"):
        assert outputs_complete(tmp_path / "overlap", name)
        for suffix in (".npz", "_depth.mp4"):
            assert (tmp_path / "overlap" / f"{name}{suffix}").read_bytes() == (
                tmp_path / "sync" / f"{name}{suffix}"
            ).read_bytes()
        manifests = [json.loads((tmp_path / run / f"{name}.json").read_text()) for run in ("overlap", "sync")]
        for m in manifests:
            m.pop("timing")
        assert manifests[0] == manifests[1]
    assert not (tmp_path / "overlap" / "b__episode_00000.npz").exists()


def test_an_interrupt_while_a_finished_video_is_written_in_the_background_keeps_it(monkeypatch, folder, tmp_path):
    from vdf.models.dav2 import DepthAnythingV2

    out = tmp_path / "out"
    args = ["predict", *TINY, *QUIET, "--input", str(folder), "--output", str(out), "--data.predict_glob", "[ac]/*"]
    stopping, original = threading.Event(), DepthAnythingV2.forward
    seen, finish, stop_workers = [0], DepthVideoWriter.finish, DepthPredictionWriter._stop_workers

    def forward(self, images, *a, **k):
        seen[0] += images.shape[0]
        if seen[0] > 6:  # the second video: SIGTERM arrives (as GracefulInterrupt raises it)
            raise Interrupted("SIGTERM received")
        return original(self, images, *a, **k)

    def slow_finish(self, *a, **k):
        # a's outputs are still being written when the run starts stopping.
        assert stopping.wait(30)
        return finish(self, *a, **k)

    def stop(self, grace):
        stopping.set()
        return stop_workers(self, grace)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(DepthAnythingV2, "forward", forward)
    monkeypatch.setattr(DepthVideoWriter, "finish", slow_finish)
    monkeypatch.setattr(DepthPredictionWriter, "_stop_workers", stop)
    try:
        with pytest.raises(SystemExit) as exited:
            main(args)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        monkeypatch.undo()
    assert exited.value.code == 1
    assert outputs_complete(out, "a__episode_00000")
    assert not outputs_complete(out, "c__episode_00000")
    assert not any(p.name.startswith(".") for p in out.iterdir()), "the interrupted video leaves no temporary files"
    assert vdf_threads() == []
    run = json.loads((out / "manifest.json").read_text())
    assert [(v["name"], v["status"]) for v in run["videos"]] == [("a__episode_00000", "ok")]

    main(args)  # the next run does the rest
    assert outputs_complete(out, "c__episode_00000")
    run = json.loads((out / "manifest.json").read_text())
    assert {v["name"]: v["status"] for v in run["videos"]} == {"a__episode_00000": "skipped", "c__episode_00000": "ok"}
