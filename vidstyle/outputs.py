"""Finished-job outputs: result.mp4 (with the source audio), compare.mp4, contact sheet, report.

Everything here reads the job folder and writes through atomic renames, so a crash while
encoding leaves the previous outputs (or none), never a half-written file under its name.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import atomic
from .coherence import NOTES_META, job_scenes
from .deflicker import deflicker_frames
from .errors import JobStateError
from .events import EventCallback, ProgressEvent, ignore_event
from .frame_feed import FeedAborted, FrameFeed, SignedFrames, follower_thread, read_signed
from .imageio import read_png
from .job import Job
from .report_html import write_report_html
from .video import EncodeReport, encode_video

CONTACT_SHEET_TILES = 16


def _frame_paths(job: Job, folder: str) -> list[Path]:
    return [job.root / folder / f"{idx:06d}.png" for idx in range(job.ledger.frame_count())]


def _scene_starts(job: Job) -> list[int]:
    return [start for start, _ in job_scenes(job)]


def _result_frames(job: Job, frames: Iterable[np.ndarray], scene_starts: list[int]) -> Iterable[np.ndarray]:
    """What result.mp4 shows: out/ as rendered, or deflickered while encoding (out/ is left as it is)."""
    coh = job.spec.coherence
    if not coh.deflicker:
        return frames
    return deflicker_frames(frames, coh.deflicker_window, scene_starts)


def _out_frames(job: Job) -> Iterator[np.ndarray]:
    for path in _frame_paths(job, "out"):
        yield read_png(path)


def _coherence_report(job: Job, frames: list[Any]) -> dict[str, Any]:
    made_by = [f.info.get("made_by", "img2img") for f in frames]
    return {
        "mode": job.spec.coherence.mode,
        "filled_frames": made_by.count("fill"),
        "img2img_frames": len(made_by) - made_by.count("fill"),
        "scenes": len(job_scenes(job)),
        "deflicker": job.spec.coherence.deflicker,
        # Settings that could not apply as given and the fallback taken (one sentence each).
        "notes": job.ledger.get_meta(NOTES_META, []) or [],
    }


def _side_by_side(job: Job, outputs: Iterable[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
    """compare.mp4's frames: source | canny | result."""
    for idx, output in outputs:
        yield np.hstack([read_png(job.src_path(idx)), read_png(job.control_path(idx)), output])


def _audio_args(job: Job) -> dict[str, Any]:
    source = job.ledger.get_meta("source", {})
    if not job.spec.encode.keep_audio or not source.get("has_audio"):
        return {"audio_from": None}
    selection = job.ledger.get_meta("selection", {})
    return {
        "audio_from": job.spec.source.path,
        "audio_start": selection.get("start") or 0.0,
        "audio_end": selection.get("end"),
    }


def contact_sheet(paths: list[Path], out: Path, tiles: int = CONTACT_SHEET_TILES, tile_width: int = 256) -> None:
    """Evenly spaced frames in a labelled grid: the first look at a finished job."""
    if not paths:
        return
    count = min(tiles, len(paths))
    picks = sorted({round(i * (len(paths) - 1) / max(1, count - 1)) for i in range(count)})
    with Image.open(paths[0]) as first:
        aspect = first.height / first.width
    tile_h = int(tile_width * aspect)
    cols = min(4, len(picks))
    rows = (len(picks) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile_width, rows * (tile_h + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, idx in enumerate(picks):
        with Image.open(paths[idx]) as frame:
            tile = frame.convert("RGB").resize((tile_width, tile_h), Image.Resampling.LANCZOS)
        x, y = (n % cols) * tile_width, (n // cols) * (tile_h + 18)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + tile_h + 3), f"frame {idx}", fill="black")
    with atomic.atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


def build_report(job: Job, audio_note: str) -> dict[str, Any]:
    frames = job.ledger.frames()
    times = [f.render_ms for f in frames if f.render_ms is not None]
    return {
        "job": str(job.root),
        "created": job.ledger.get_meta("created_at"),
        "finished": time.time(),
        "source": job.spec.source.path,
        "frames": len(frames),
        "fps": job.fps,
        "size": f"{job.spec.size.width}x{job.spec.size.height}",
        "backend": sorted({f.backend for f in frames if f.backend}),
        "render_ms": {
            "mean": statistics.fmean(times) if times else None,
            "median": statistics.median(times) if times else None,
            "max": max(times) if times else None,
        },
        "redone_frames": [f.idx for f in frames if f.attempt > 0],
        "coherence": _coherence_report(job, frames),
        "audio": audio_note,
        "outputs": {
            "result": "result.mp4",
            "compare": "compare.mp4",
            "contact_sheet": "report/contact_sheet.png",
            "report": "report/index.html",
        },
        "spec": job.spec.dict(),
    }


def report_markdown(report: dict[str, Any]) -> str:
    ms = report["render_ms"]
    mean = f"{ms['mean']:.0f} ms" if ms["mean"] is not None else "n/a"
    lines = [
        f"# Vidstyle job {Path(report['job']).name}",
        "",
        f"- Source: `{report['source']}`",
        f"- Frames: {report['frames']} at {report['fps']:.3f} fps, {report['size']}",
        f"- Backend: {', '.join(report['backend']) or 'n/a'}; mean render time per frame: {mean}",
        f"- Audio: {report['audio']}",
        f"- Redone frames: {', '.join(map(str, report['redone_frames'])) or 'none'}",
        f"- Coherence: {report['coherence']['mode']} ({report['coherence']['img2img_frames']} frames rendered, "
        f"{report['coherence']['filled_frames']} filled from keyframes)",
        *[f"- Note: {note}" for note in report["coherence"]["notes"]],
        "",
        "Outputs: `result.mp4`, `compare.mp4` (source | canny | result), `report/contact_sheet.png`, "
        "`report/index.html` (scores, worst and repaired frames, settings).",
        "",
        "![contact sheet](contact_sheet.png)",
    ]
    return "\n".join(lines) + "\n"


def _counted(frames: Iterable[Any], name: str, total: int, on_event: EventCallback) -> Iterator[Any]:
    """The frames as they go to the encoder, with a "progress" event for each one."""
    for done, frame in enumerate(frames, start=1):
        yield frame
        on_event(ProgressEvent("progress", "finish", done, total, message=f"encoding {name}"))


def _warner(on_event: EventCallback, name: str) -> Callable[[str], None]:
    return lambda message: on_event(ProgressEvent("warning", "finish", message=f"{name}: {message}"))


@dataclass
class EncodedVideos:
    """result.mp4 and compare.mp4 as encoded, and the encoder's warnings for the user."""

    result: EncodeReport
    compare: EncodeReport
    warnings: list[str] = field(default_factory=list)


@dataclass
class _EncodeSettings:
    """What both encodes take from the job, read once on the calling thread (the ledger is not
    shared with encoder threads)."""

    fps: float
    crf: int
    preset: str
    audio: dict[str, Any]

    @classmethod
    def of(cls, job: Job) -> _EncodeSettings:
        return cls(job.fps, job.spec.encode.crf, job.spec.encode.preset, _audio_args(job))

    def encode(
        self, frames: Iterable[np.ndarray], path: Path, on_warning: Callable[[str], None] | None = None
    ) -> EncodeReport:
        return encode_video(
            frames, path, fps=self.fps, on_warning=on_warning, crf=self.crf, preset=self.preset, **self.audio
        )


def encode_outputs(job: Job, on_event: EventCallback = ignore_event) -> EncodedVideos:
    """Encode result.mp4 and compare.mp4 from out/, with a progress event per frame."""
    total = job.ledger.frame_count()
    settings = _EncodeSettings.of(job)
    result = settings.encode(
        _counted(_result_frames(job, _out_frames(job), _scene_starts(job)), "result.mp4", total, on_event),
        job.result_path,
        on_warning=_warner(on_event, "result.mp4"),
    )
    # compare.mp4 carries the same audio: its warnings would repeat result.mp4's.
    compare = settings.encode(
        _counted(_side_by_side(job, enumerate(_out_frames(job))), "compare.mp4", total, on_event), job.compare_path
    )
    return EncodedVideos(result, compare)


class EncodeFollower:
    """Encodes result.mp4 and compare.mp4 on two threads while the job renders, a few frames
    behind the backend, so the finish stage does not start encoding from frame 0.

    Each video is published (renamed into place) only after `close(publish=True)` found every
    frame it read unchanged; otherwise both are dropped and `videos()` is None, and the finish
    stage encodes as before. Nothing here touches the ledger.
    """

    def __init__(self, job: Job, feed: FrameFeed) -> None:
        self._job, self._feed = job, feed
        self._settings = _EncodeSettings.of(job)
        self._starts = _scene_starts(job)
        self._read = SignedFrames()
        self._warnings: list[str] = []
        self._reports: dict[str, EncodeReport] = {}
        self._threads = [
            follower_thread(self._encode, name=f"vidstyle-encode-{name}", args=(name,))
            for name in ("result", "compare")
        ]
        for thread in self._threads:
            thread.start()

    def _outputs(self) -> Iterator[tuple[int, np.ndarray]]:
        """Each frame's output once it is done, then a wait until the frames are final."""
        for idx in self._feed.iter_done():
            path = self._job.out_path(idx)
            image, signature = read_signed(path)
            self._read.record(idx, path, signature)
            yield idx, image
        self._feed.wait_sealed()

    def _encode(self, name: str) -> None:
        try:
            if name == "result":
                frames = _result_frames(self._job, (image for _, image in self._outputs()), self._starts)
                warn = lambda message: self._warnings.append(f"result.mp4: {message}")  # noqa: E731
                self._reports[name] = self._settings.encode(frames, self._job.result_path, on_warning=warn)
            else:
                self._reports[name] = self._settings.encode(
                    _side_by_side(self._job, self._outputs()), self._job.compare_path
                )
        except FeedAborted:
            return
        except Exception:  # noqa: BLE001 - the finish stage encodes again and reports the error to the user
            return

    def close(self, publish: bool) -> None:
        """Let the encoders publish (when asked and no frame they read has changed since), else stop them."""
        if publish and not self._read.changed():
            self._feed.seal()
        else:
            self._feed.abort()

    def videos(self) -> EncodedVideos | None:
        """Wait for both encoders; what they published, or None when either did not finish."""
        for thread in self._threads:
            thread.join()
        if self._feed.aborted or set(self._reports) != {"result", "compare"}:
            return None
        return EncodedVideos(self._reports["result"], self._reports["compare"], list(self._warnings))


def write_outputs(
    job: Job, on_event: EventCallback = ignore_event, encoded: EncodedVideos | None = None
) -> dict[str, Any]:
    """Encode result.mp4 and compare.mp4 (unless `encoded` while rendering), then the report;
    progress and encoder warnings (audio dropped, frames padded) go to `on_event`."""
    counts = job.ledger.counts()
    total = job.ledger.frame_count()
    if counts["done"] != total:
        raise JobStateError(
            f"{counts['pending'] + counts['failed']} frames are not rendered yet; resume the job first."
        )
    if encoded is None:
        encoded = encode_outputs(job, on_event)
    else:
        for warning in encoded.warnings:
            on_event(ProgressEvent("warning", "finish", message=warning))
    audio, result = _audio_args(job), encoded.result
    if audio["audio_from"] is None:
        note = "none in the source" if job.spec.encode.keep_audio else "left out (keep_audio = false)"
    else:
        note = result.audio_note or ("kept" if result.audio_kept else "dropped")
    job.report_dir.mkdir(exist_ok=True)
    # The contact sheet and the page's frame copies are made on two threads while this one plots.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidstyle-report") as pool:
        sheet = pool.submit(contact_sheet, _frame_paths(job, "out"), job.report_dir / "contact_sheet.png")
        report = build_report(job, note)
        atomic.write_text(job.report_dir / "report.json", json.dumps(report, indent=2, default=str))
        atomic.write_text(job.report_dir / "report.md", report_markdown(report))
        write_report_html(job, report, pool=pool, before_page=sheet.result)
    return report
