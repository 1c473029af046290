"""vidstyle.video: real PyAV round trips on small clips made by tests/media.py."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import media  # tests/media.py (pytest puts tests/ on sys.path)
import numpy as np
import pytest

from vidstyle import video
from vidstyle.errors import MediaError, SpecError
from vidstyle.media.rotation import frame_matrix_rotation
from vidstyle.spec import SourceSpec

FPS = 30


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "cfr": media.make_video(folder / "cfr.mp4", seconds=3.0, fps=FPS, flash_times=[0.4, 1.5, 2.7]),
        "vfr": media.make_video(folder / "vfr.mp4", seconds=2.0, fps=FPS, vfr=True, flash_times=[1.1]),
        "silent": media.make_video(folder / "silent.mp4", seconds=0.5, fps=25, audio=False),
    }


def markers(frames: list[video.SelectedFrame]) -> list[int]:
    return [media.read_marker(f.image) for f in frames]


def select(path: Path, **spec: object) -> list[video.SelectedFrame]:
    return list(video.iter_frames(path, SourceSpec(**spec)))


# --------------------------------------------------------------------------- probe


def test_probe_constant_fps_video(clips: dict) -> None:
    info = video.probe(clips["cfr"].path)
    assert (info.width, info.height, info.rotation) == (96, 64, 0)
    assert info.rate == Fraction(30) and info.fps == 30.0 and not info.is_vfr
    assert info.frame_count == 90 and info.frame_count_exact
    assert info.duration == pytest.approx(3.0, abs=1e-6)
    assert info.codec == "h264" and not info.is_image_sequence
    assert len(info.audio) == 1
    assert info.audio[0].sample_rate == 44100 and info.audio[0].channels == 2
    assert info.audio[0].duration == pytest.approx(3.0, abs=0.03)
    assert info.as_dict()["rate"] == "30/1"


def test_probe_without_audio(clips: dict) -> None:
    info = video.probe(clips["silent"])  # a MadeVideo works as a path
    assert info.audio == [] and info.fps == 25.0 and info.frame_count == 12


def test_probe_variable_fps(clips: dict) -> None:
    made = clips["vfr"]
    info = video.probe(made.path)
    assert info.is_vfr
    assert info.frame_count == made.frame_count and info.frame_count_exact
    # The last frame lasts one base period: duration is pts-based, not the stream's header.
    assert info.duration == pytest.approx(made.frame_times[-1] + 1 / FPS, abs=1e-3)
    assert info.fps == pytest.approx(made.frame_count / info.duration, rel=1e-3)


def test_probe_rotated_video(tmp_path: Path) -> None:
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write display-matrix rotation")
    made = media.make_video(tmp_path / "rot.mp4", seconds=0.3, rotation=90, audio=False)
    info = video.probe(made.path)
    assert info.rotation == 90
    assert (info.coded_width, info.coded_height) == (96, 64)
    assert (info.width, info.height) == (64, 96)
    frames = select(made.path)
    coded = media.decode_video(made.path)
    assert frames[3].image.shape == (96, 64, 3)
    # Displayed = coded turned 90 degrees counter-clockwise, so turning back recovers the marker.
    assert np.array_equal(frames[3].image, np.rot90(coded[3][1], 1))
    assert [media.read_marker(np.rot90(f.image, -1)) for f in frames] == list(range(made.frame_count))
    with av.open(str(made.path)) as container:  # the raw-matrix path older PyAV versions use
        frame = next(container.decode(video=0))
        assert frame_matrix_rotation(frame) == pytest.approx(90.0)


def test_probe_image_folder_natural_order(tmp_path: Path) -> None:
    media.make_image_folder(tmp_path / "frames", count=12)
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    info = video.probe(tmp_path / "frames", sequence_fps=24)
    assert info.is_image_sequence and info.frame_count == 12 and info.fps == 24.0
    assert (info.width, info.height) == (96, 64) and info.audio == []
    frames = list(video.iter_frames(tmp_path / "frames", SourceSpec(sequence_fps=24)))
    assert markers(frames) == list(range(12))  # frame_2 before frame_10
    assert frames[5].time == pytest.approx(5 / 24)


def test_image_folder_jpg_with_selection(tmp_path: Path) -> None:
    media.make_image_folder(tmp_path / "jpgs", count=10, ext="jpg")
    frames = list(video.iter_frames(tmp_path / "jpgs", SourceSpec(start_frame=2, every_nth=3)))
    assert [f.source_index for f in frames] == [2, 5, 8]
    assert markers(frames) == [2, 5, 8]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.mp4", "does not exist"),
        (lambda p: _write(p / "notes.mp4", b"this is a text file, not a video\n"), "cannot be read as a video"),
        (lambda p: _truncated(p), "cannot be read as a video"),
        (lambda p: _truncated_faststart(p), "truncated"),
        (lambda p: _zero_frames(p), "no video frames"),
        (lambda p: _mkdir(p / "empty"), "no PNG/JPG images"),
        (lambda p: _audio_only(p), "no video stream"),
    ],
    ids=["missing", "text-file", "truncated", "truncated-faststart", "zero-frames", "empty-folder", "audio-only"],
)
def test_bad_inputs_raise_media_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(MediaError) as caught:
        video.probe(path)
    assert message in str(caught.value)
    assert str(caught.value).count(". ") == 0  # one sentence


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _truncated(tmp: Path) -> Path:
    made = media.make_video(tmp / "full.mp4", seconds=1.0, audio=False)  # index (moov) at the end
    data = made.path.read_bytes()
    return _write(tmp / "cut.mp4", data[: len(data) // 2])


def _truncated_faststart(tmp: Path) -> Path:
    # Our encoder writes the index first, so a cut file opens but misses frames.
    video.encode_video((media.draw_frame(i, i / 30, (96, 64)) for i in range(60)), tmp / "fs.mp4", 30)
    data = (tmp / "fs.mp4").read_bytes()
    return _write(tmp / "fs_cut.mp4", data[: len(data) * 2 // 3])


def _zero_frames(tmp: Path) -> Path:
    path = tmp / "empty.avi"  # AVI keeps a video stream with no frames (MP4 drops an empty track)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        container.start_encoding()
    return path


def _audio_only(tmp: Path) -> Path:
    path = tmp / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = media.audio_track(0.3, 44100, [])[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# --------------------------------------------------------------------------- selection


def test_select_all_frames_in_order(clips: dict) -> None:
    frames = select(clips["cfr"].path)
    assert len(frames) == 90
    assert markers(frames) == list(range(90))
    assert [f.index for f in frames] == list(range(90))
    assert frames[10].time == pytest.approx(10 / FPS)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (64, 96, 3)


def test_select_time_range(clips: dict) -> None:
    info = video.probe(clips["cfr"].path)
    source = SourceSpec(start_time=0.5, end_time=1.0)
    selection = video.plan_selection(info, source)
    assert (selection.start_time, selection.end_time, selection.frame_count) == (0.5, 1.0, 15)
    frames = list(video.iter_frames(clips["cfr"].path, source, info))
    assert markers(frames) == list(range(15, 30))
    assert video.count_selected(info, source) == len(frames)


def test_select_time_between_frames_starts_at_next_frame(clips: dict) -> None:
    frames = select(clips["cfr"].path, start_time=0.51, end_time=0.6)
    assert markers(frames) == [16, 17]  # 0.533 and 0.567; 0.6 is excluded


def test_select_index_range_every_nth(clips: dict) -> None:
    info = video.probe(clips["cfr"].path)
    source = SourceSpec(start_frame=5, end_frame=20, every_nth=3)
    selection = video.plan_selection(info, source)
    assert selection.rate == Fraction(10) and selection.frame_count == 5 and not selection.resample
    frames = list(video.iter_frames(clips["cfr"].path, source, info))
    assert markers(frames) == [5, 8, 11, 14, 17]
    assert [f.source_index for f in frames] == [5, 8, 11, 14, 17]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]


def test_select_late_start_seeks_and_keeps_exact_indices(clips: dict) -> None:
    frames = select(clips["cfr"].path, start_time=2.5)  # past SEEK_AFTER: decodes from a seek
    assert markers(frames) == list(range(75, 90))
    assert [f.source_index for f in frames] == list(range(75, 90))


def test_target_fps_downsamples_by_time(clips: dict) -> None:
    frames = select(clips["cfr"].path, target_fps=12, end_time=1.0)
    ticks = [k / 12 for k in range(12)]
    expected = [int(np.floor(t * FPS + 1e-6)) for t in ticks]
    assert markers(frames) == expected
    assert [f.source_index for f in frames] == expected


def test_target_fps_upsamples_by_repeating(clips: dict) -> None:
    frames = select(clips["cfr"].path, target_fps=60, end_time=0.2)
    assert markers(frames) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert frames[0].image is not frames[1].image  # repeats are copies a caller may modify


def test_vfr_resampled_to_target_fps(clips: dict) -> None:
    made = clips["vfr"]
    info = video.probe(made.path)
    selection = video.plan_selection(info, SourceSpec(target_fps=10))
    assert selection.resample and selection.frame_count == int(np.ceil(info.duration * 10))
    frames = select(made.path, target_fps=10)
    assert len(frames) == selection.frame_count
    for frame in frames:
        tick = frame.index / 10
        latest = max(i for i, t in enumerate(made.frame_times) if t <= tick + 1e-6)
        assert frame.source_index == latest and media.read_marker(frame.image) == latest
        assert frame.time == pytest.approx(made.frame_times[latest], abs=1e-4)


def test_vfr_without_target_becomes_constant_fps(clips: dict) -> None:
    made = clips["vfr"]
    info = video.probe(made.path)
    selection = video.plan_selection(info, SourceSpec())
    assert selection.resample
    assert selection.rate in video.STANDARD_RATES or selection.rate.denominator == 1
    frames = select(made.path)
    assert len(frames) == selection.frame_count
    times = [f.time for f in frames]
    assert times == sorted(times)


def test_vfr_start_frame_uses_true_frame_times(clips: dict) -> None:
    made = clips["vfr"]
    info = video.probe(made.path)
    selection = video.plan_selection(info, SourceSpec(start_frame=10, target_fps=30))
    assert selection.start_time == pytest.approx(made.frame_times[10], abs=1e-4)
    frames = select(made.path, start_frame=10, target_fps=30)
    assert frames[0].source_index == 10


def test_empty_selection_is_a_spec_error(clips: dict) -> None:
    info = video.probe(clips["cfr"].path)
    with pytest.raises(SpecError, match="no frames"):
        video.plan_selection(info, SourceSpec(start_time=10.0))


def test_read_frame_at(clips: dict, tmp_path: Path) -> None:
    path = clips["cfr"].path
    info = video.probe(path)
    assert media.read_marker(video.read_frame_at(path, 17, info)) == 17
    assert media.read_marker(video.read_frame_at(path, 80, info)) == 80  # via seek
    assert media.read_marker(video.read_frame_at_time(path, 1.01, info)) == 30
    with pytest.raises(MediaError, match="outside"):
        video.read_frame_at(path, 90, info)
    media.make_image_folder(tmp_path / "seq", count=4)
    assert media.read_marker(video.read_frame_at(tmp_path / "seq", 3)) == 3


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("src", [(200, 100), (60, 90), (64, 64)])
def test_fit_frame_shapes(mode: str, src: tuple) -> None:
    image = np.full((src[1], src[0], 3), 128, np.uint8)
    out = video.fit_frame(image, 64, 48, mode)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


def test_fit_crop_keeps_the_center() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :100] = (255, 0, 0)
    image[:, 100:200] = (0, 255, 0)
    image[:, 200:] = (0, 0, 255)
    out = video.fit_frame(image, 64, 64, "crop")
    assert np.all(out[:, 8:56] == (0, 255, 0))


def test_fit_pad_letterboxes_with_black() -> None:
    image = np.full((50, 200, 3), 200, np.uint8)  # 4:1 -> 64x16 centred in 64x64
    out = video.fit_frame(image, 64, 64, "pad")
    assert np.all(out[:24] == 0) and np.all(out[40:] == 0)
    assert np.all(out[24:40] == 200)


def test_fit_stretch_and_upscale() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, 10:] = 255
    out = video.fit_frame(image, 80, 80, "stretch")
    assert out.shape == (80, 80, 3)
    assert out[:, :35].max() < 30 and out[:, 45:].min() > 225


def test_fit_rejects_unknown_mode() -> None:
    with pytest.raises(SpecError, match="crop, pad or stretch"):
        video.fit_frame(np.zeros((8, 8, 3), np.uint8), 16, 16, "zoom")


# --------------------------------------------------------------------------- encode


def test_encode_round_trip_with_audio(clips: dict, tmp_path: Path) -> None:
    source = clips["cfr"].path
    info = video.probe(source)
    out = tmp_path / "result.mp4"
    frames = (f.image for f in video.iter_frames(source, SourceSpec(), info))
    report = video.encode_video(frames, out, info.rate, audio_from=source)
    assert report.frames == 90 and report.audio_kept and report.audio_note == ""
    again = video.probe(out)
    assert again.frame_count == 90 and again.rate == Fraction(30) and not again.is_vfr
    assert again.duration == pytest.approx(3.0, abs=1e-6)
    assert len(again.audio) == 1 and again.audio[0].codec == "aac"
    assert abs(media.audio_duration(out) - again.duration) <= 1 / FPS
    assert [media.read_marker(img) for _, img in media.decode_video(out)] == list(range(90))


def test_encode_trimmed_audio_stays_in_sync(clips: dict, tmp_path: Path) -> None:
    source = clips["cfr"].path
    info = video.probe(source)
    spec = SourceSpec(start_time=1.0, end_time=2.5)
    selection = video.plan_selection(info, spec)
    out = tmp_path / "trim.mp4"
    frames = (f.image for f in video.iter_frames(source, spec, info))
    report = video.encode_video(
        frames, out, selection.rate, audio_from=source, audio_start=selection.start_time, audio_end=selection.end_time
    )
    assert report.frames == 45 and report.audio_kept
    flashes, beeps = media.flash_times_in(out), media.beep_times_in(out)
    assert flashes == [pytest.approx(0.5, abs=1e-6)]  # the 1.5 s flash, 1.0 s in
    assert len(beeps) == 1 and abs(beeps[0] - flashes[0]) < 1 / FPS
    assert abs(media.audio_duration(out) - 1.5) <= 1 / FPS
    _, _, first_audio = media.decode_audio(out)
    assert first_audio == pytest.approx(0.0, abs=1e-3)  # audio starts with the first frame


def test_encode_vfr_source_keeps_sync(clips: dict, tmp_path: Path) -> None:
    made = clips["vfr"]
    info = video.probe(made.path)
    spec = SourceSpec(target_fps=30, start_time=0.5)
    selection = video.plan_selection(info, spec)
    out = tmp_path / "vfr_out.mp4"
    frames = (f.image for f in video.iter_frames(made.path, spec, info))
    video.encode_video(
        frames,
        out,
        selection.rate,
        audio_from=made.path,
        audio_start=selection.start_time,
        audio_end=selection.end_time,
    )
    again = video.probe(out)
    assert not again.is_vfr and again.frame_count == selection.frame_count
    flashes, beeps = media.flash_times_in(out), media.beep_times_in(out)
    assert flashes == [pytest.approx(1.1 - 0.5, abs=1e-3)]
    assert len(beeps) == 1 and abs(beeps[0] - flashes[0]) < 1 / FPS


def test_encode_every_nth_keeps_audio_length(clips: dict, tmp_path: Path) -> None:
    source = clips["cfr"].path
    info = video.probe(source)
    spec = SourceSpec(every_nth=3, end_time=2.0)
    selection = video.plan_selection(info, spec)
    out = tmp_path / "nth.mp4"
    frames = (f.image for f in video.iter_frames(source, spec, info))
    report = video.encode_video(
        frames, out, selection.rate, audio_from=source, audio_start=selection.start_time, audio_end=selection.end_time
    )
    again = video.probe(out)
    assert again.fps == 10.0 and again.frame_count == 20 == report.frames
    assert abs(media.audio_duration(out) - 2.0) <= 0.1


def test_encode_broken_audio_goes_on_without_it(tmp_path: Path) -> None:
    source = _garbage_audio(tmp_path / "bad_audio.mkv")
    warnings: list[str] = []
    out = tmp_path / "result.mp4"
    frames = (media.draw_frame(i, i / FPS, (96, 64)) for i in range(15))
    report = video.encode_video(frames, out, FPS, audio_from=source, on_warning=warnings.append)
    assert not report.audio_kept and "no audio" in report.audio_note
    assert warnings == [report.audio_note]
    assert video.probe(out).audio == [] and video.probe(out).frame_count == 15


def _garbage_audio(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        for i in range(15):
            frame = av.VideoFrame.from_ndarray(media.draw_frame(i, i / FPS, (96, 64)), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
            packet = av.Packet(rng.integers(0, 255, 300, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts = audio, i * 1470, i * 1470
            packet.time_base = Fraction(1, 44100)
            container.mux(packet)
        container.mux(stream.encode(None))
    return path


def test_encode_without_usable_audio_source_notes_why(clips: dict, tmp_path: Path) -> None:
    frames = [media.draw_frame(i, i / 25, (96, 64)) for i in range(5)]
    report = video.encode_video(frames, tmp_path / "a.mp4", 25, audio_from=clips["silent"].path)
    assert not report.audio_kept and "no audio track" in report.audio_note
    report = video.encode_video(frames, tmp_path / "b.mp4", 25)
    assert not report.audio_kept and report.audio_note == ""


def test_encode_png_paths_and_ntsc_rate(tmp_path: Path) -> None:
    paths = media.make_image_folder(tmp_path / "pngs", count=6)
    report = video.encode_video(paths, tmp_path / "out.mp4", Fraction(30000, 1001), crf=10)
    info = video.probe(tmp_path / "out.mp4")
    assert report.frames == 6 and info.rate == Fraction(30000, 1001)
    decoded = media.decode_video(tmp_path / "out.mp4")
    assert [media.read_marker(img) for _, img in decoded] == list(range(6))
    original = media.draw_frame(2, 2 / 30, (96, 64)).astype(int)
    assert np.abs(decoded[2][1].astype(int) - original).mean() < 6  # colours survive RGB->YUV->RGB


def test_encode_odd_size_is_padded_with_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    frames = [np.full((63, 95, 3), 90, np.uint8) for _ in range(3)]
    report = video.encode_video(frames, tmp_path / "odd.mp4", 24, on_warning=warnings.append)
    assert (report.width, report.height) == (96, 64)
    assert len(warnings) == 1 and "even" in warnings[0]
    assert (video.probe(tmp_path / "odd.mp4").width, video.probe(tmp_path / "odd.mp4").height) == (96, 64)


def test_encode_is_atomic_when_frames_fail(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"

    def frames():
        for i in range(10):
            if i == 6:
                raise RuntimeError("renderer crashed")
            yield media.draw_frame(i, i / FPS, (96, 64))

    with pytest.raises(RuntimeError, match="renderer crashed"):
        video.encode_video(frames(), out, FPS)
    assert list(tmp_path.iterdir()) == []  # no result.mp4, no temp file


def test_encode_rejects_size_change_and_empty_input(tmp_path: Path) -> None:
    frames = [np.zeros((64, 96, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    with pytest.raises(MediaError, match="share one size"):
        video.encode_video(frames, tmp_path / "x.mp4", FPS)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(MediaError, match="no frames"):
        video.encode_video([], tmp_path / "y.mp4", FPS)
    assert list(tmp_path.iterdir()) == []


def test_encode_replaces_existing_result_only_when_done(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    video.encode_video([np.zeros((64, 96, 3), np.uint8)] * 4, out, FPS)
    before = out.read_bytes()

    def failing():
        yield np.full((64, 96, 3), 255, np.uint8)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        video.encode_video(failing(), out, FPS)
    assert out.read_bytes() == before


def test_encode_late_starting_audio_gets_leading_silence(tmp_path: Path) -> None:
    made = media.make_video(tmp_path / "late.mp4", seconds=1.5, fps=FPS, flash_times=[0.8], audio_delay=0.3)
    _, _, first = media.decode_audio(made.path)
    assert first == pytest.approx(0.3, abs=0.03)  # minus the AAC encoder delay FFmpeg keeps here
    out = tmp_path / "out.mp4"
    report = video.encode_video((f.image for f in select(made.path)), out, FPS, audio_from=made.path)
    assert report.audio_kept
    samples, rate, first_out = media.decode_audio(out)
    assert first_out == pytest.approx(0.0, abs=1e-3)
    assert np.abs(samples[: int(0.25 * rate)]).max() < 1e-3  # silence until the track begins
    flashes, beeps = media.flash_times_in(out), media.beep_times_in(out)
    assert len(beeps) == 1 and abs(beeps[0] - flashes[0]) < 1 / FPS


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_display_matrix_rotation_matches_ffmpeg(degrees: int) -> None:
    # What PyAV's set_display_rotation(degrees) stores: av_display_rotation_set(-degrees),
    # i.e. [cos, -sin; sin, cos] of `degrees`, in 16.16 fixed point (2.30 for the last entry).
    theta = np.radians(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    matrix = np.array([cos, -sin, 0, sin, cos, 0, 0, 0, 1 / 65536], dtype=np.float64) * 65536
    matrix[8] = 1 << 30
    raw = np.round(matrix).astype("<i4").tobytes()
    assert round(video.display_matrix_rotation(raw)) % 360 == degrees


def test_probe_cache_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    media.make_video(path, seconds=0.5, fps=FPS, audio=False)
    first = video.probe(path)
    first.frame_count = -1  # callers get copies; the cache is not theirs to change
    assert video.probe(path).frame_count == 15
    media.make_video(path, seconds=1.0, fps=FPS, audio=False)  # replaced in place
    assert video.probe(path).frame_count == 30


def test_audio_file_with_cover_art_is_not_a_video(tmp_path: Path) -> None:
    if not hasattr(av.stream.Stream, "disposition"):
        pytest.skip("this PyAV cannot tell cover art from video (no Stream.disposition)")
    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        sound = container.add_stream("aac", rate=44100)
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        container.mux(cover.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")))
        container.mux(cover.encode(None))
        samples = av.AudioFrame.from_ndarray(media.audio_track(0.5, 44100, [])[None, :], format="fltp", layout="mono")
        samples.sample_rate, samples.pts = 44100, 0
        container.mux(sound.encode(samples))
        container.mux(sound.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        video.probe(path)
