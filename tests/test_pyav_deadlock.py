"""The WebUI freeze of issue 9: PyAV's Python log callback vs. FFmpeg decoder threads.

What the real WebUI showed: torchvision's `import` calls `av.logging.set_level(av.logging.ERROR)`,
which points FFmpeg's log callback at PyAV's Python function. From then on every FFmpeg log call
(H.264 decoders log every NAL unit at debug level) takes the GIL, also on FFmpeg's own decoder
threads. Closing a decoder while those threads still work (first frame, a preview frame, a
selection stopped early) frees the codec context with the GIL held and waits for a thread that
waits for the GIL: the whole process stops at 0 % CPU.

Each case runs in a subprocess (so a hang cannot take pytest down) that turns PyAV logging on as
torchvision does, keeps other Python threads busy (GIL contention, as in the WebUI), and repeats
one kind of early-closed work through `vidstyle.video`'s public functions, collecting garbage after
each round (the cyclic GC runs all the time in an allocation-heavy process like the WebUI, and
PyAV 12 frees a closed container's decoder only in a GC pass).
A watchdog thread in faulthandler (which needs no GIL) dumps every thread's stack and exits when
one round stalls, so a deadlock shows up as a failure with the stack that hung;
`subprocess.run(timeout=...)` is the backstop. The round limit is generous: a round is a
fraction of a second of work. Before the fix, each decoding case hung in every run with PyAV
12.3 and 18.1; `encode` (frames from an early-closed `iter_frames`, encoder closed on an error)
hung with 18.1 and guards the encoder's error path.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 16  # per case; the code before the fix hung in the first one or two, in every measured run
ENCODE_ROUNDS = 6  # an encode round costs several of the others (x264 start-up under GIL contention)
STALL_SECONDS = 20.0  # one round is < 1 s of work even on a loaded 2-core box
CLIP_SIZE = (320, 240)  # big enough that FFmpeg's frame threads are still decoding when we close


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import media  # tests/media.py

    made = media.make_video(tmp_path_factory.mktemp("deadlock") / "clip.mp4", seconds=1.0, fps=30, size=CLIP_SIZE)
    return made.path


CASES = ("probe", "read_frame_at", "read_frame_at_time", "iter_frames_stopped_early", "encode")


@pytest.mark.parametrize("case", CASES)
def test_no_hang_with_pyav_logging_on(case: str, clip: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    try:
        result = subprocess.run(
            [sys.executable, __file__, case, str(clip), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=STALL_SECONDS * 2 + ROUNDS * 5,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: the process hung with PyAV logging on (killed by the backstop timeout)")
    tail = "\n".join((result.stderr or "").splitlines()[-40:])
    assert result.returncode == 0, f"{case}: hung or failed with PyAV logging on (exit {result.returncode}):\n{tail}"
    assert f"completed {_rounds(case)} rounds" in result.stdout, result.stdout + tail


def _rounds(case: str) -> int:
    return ENCODE_ROUNDS if case == "encode" else ROUNDS


def test_ffmpeg_reason_for_a_skipped_packet_reaches_our_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The fix leaves PyAV's logging alone, so FFmpeg's reason for a damaged frame comes through ours."""
    import av
    import media

    from vidstyle import video

    made = media.make_video(tmp_path / "damaged.mp4", seconds=1.0, fps=30, audio=False)
    with av.open(str(made.path)) as container:
        damaged = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size][10:12]
    data = bytearray(made.path.read_bytes())
    for pos, _size in damaged:
        data[pos : pos + 4] = b"\xff\xff\xff\xff"  # an impossible NAL unit length: the packet cannot decode
    made.path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="vidstyle.video"):
        image = video.read_frame_at(made.path, 20)  # decodes frames 0-20 on this thread, packets 10 and 11 fail
    assert image.shape == (64, 96, 3)
    skipped = [r.getMessage() for r in caplog.records if r.name == "vidstyle.video"]
    assert len(skipped) == 2, skipped
    assert all("skipped a packet that does not decode" in m and "Invalid data" in m for m in skipped)


# --------------------------------------------------------------------------- the child process


def _probe(clip: Path, work: Path, n: int) -> None:
    from vidstyle import video

    copy = work / f"probe_{n}.mp4"  # a new file each round: probe caches per path and mtime
    shutil.copyfile(clip, copy)
    info = video.probe(copy)
    assert info.frame_count == 30
    copy.unlink()


def _read_frame_at(clip: Path, work: Path, n: int) -> None:
    from vidstyle import video

    info = video.probe(clip)  # cached by _child, so only the frame read decodes
    image = video.read_frame_at(clip, (n * 7) % info.frame_count, info)
    assert image.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)


def _read_frame_at_time(clip: Path, work: Path, n: int) -> None:
    from vidstyle import video

    info = video.probe(clip)  # cached by _child
    image = video.read_frame_at_time(clip, ((n * 11) % info.frame_count) / info.fps, info)
    assert image.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)


class _ConsumerGaveUp(Exception):
    pass


def _iter_frames_stopped_early(clip: Path, work: Path, n: int) -> None:
    """Every way a caller stops reading: break, an exception, close(), one next() and drop."""
    from vidstyle import video
    from vidstyle.spec import SourceSpec

    stop_at = 1 + n % 5
    way = n % 4
    frames = video.iter_frames(clip, SourceSpec(target_fps=None if n % 2 else 24), info=video.probe(clip))
    if way == 0:
        for frame in frames:
            if frame.index >= stop_at:
                break
    elif way == 1:
        with pytest.raises(_ConsumerGaveUp):
            for frame in frames:
                if frame.index >= stop_at:
                    raise _ConsumerGaveUp
    elif way == 2:
        for _ in range(stop_at):
            next(frames)
        frames.close()  # type: ignore[attr-defined]
    else:
        next(frames)
    del frames


def _encode(clip: Path, work: Path, n: int) -> None:
    """Encode 10 source frames with the source's audio; every other round the frames fail midway."""
    from vidstyle import video
    from vidstyle.errors import MediaError
    from vidstyle.spec import SourceSpec

    def images() -> Iterator[object]:
        for frame in video.iter_frames(clip, SourceSpec(end_frame=10), info=video.probe(clip)):
            if n % 2 and frame.index == 6:
                raise MediaError("a frame of this test failed to load")
            yield frame.image

    out = work / f"out_{n}.mp4"
    if n % 2:
        with pytest.raises(MediaError):
            video.encode_video(images(), out, 30, audio_from=clip, audio_end=10 / 30)
        assert not out.exists()
    else:
        report = video.encode_video(images(), out, 30, audio_from=clip, audio_end=10 / 30)
        assert report.frames == 10 and report.audio_kept
        out.unlink()


OPERATIONS: dict[str, Callable[[Path, Path, int], None]] = {
    "probe": _probe,
    "read_frame_at": _read_frame_at,
    "read_frame_at_time": _read_frame_at_time,
    "iter_frames_stopped_early": _iter_frames_stopped_early,
    "encode": _encode,
}


def _keep_gil_busy(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(500))  # pure Python: holds the GIL between switch intervals


def _child(case: str, clip: Path, work: Path) -> None:
    import av.logging

    from vidstyle import video

    video.probe(clip)  # cached while logging is off: each case then exercises only its own path
    av.logging.set_level(av.logging.ERROR)  # exactly what torchvision/io/video.py does at import
    faulthandler.enable()
    stop = threading.Event()
    busy = [threading.Thread(target=_keep_gil_busy, args=(stop,), daemon=True) for _ in range(2)]
    for thread in busy:
        thread.start()
    operation = OPERATIONS[case]
    for n in range(_rounds(case)):
        faulthandler.dump_traceback_later(STALL_SECONDS, exit=True)  # a deadlock: stacks to stderr, exit 1
        operation(clip, work, n)
        gc.collect()  # as the WebUI's GC does at any moment; PyAV 12 frees a closed container's decoder only here
    faulthandler.cancel_dump_traceback_later()
    # Other extensions share this setting: vidstyle must work with it, not switch it.
    assert av.logging.get_level() == av.logging.ERROR, "vidstyle changed PyAV's process-wide log level"
    stop.set()
    for thread in busy:
        thread.join()
    print(f"completed {_rounds(case)} rounds", flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
