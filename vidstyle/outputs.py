"""Finished-job outputs: result.mp4 (with the source audio), compare.mp4, contact sheet, report.

Everything here reads the job folder and writes through atomic renames, so a crash while
encoding leaves the previous outputs (or none), never a half-written file under its name.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import atomic
from .coherence import NOTES_META, deflicker_stream, job_scenes
from .errors import JobStateError
from .events import EventCallback, ProgressEvent, ignore_event
from .imageio import read_png
from .job import Job
from .report_html import write_report_html
from .video import encode_video

CONTACT_SHEET_TILES = 16


def _frame_paths(job: Job, folder: str) -> list[Path]:
    return [job.root / folder / f"{idx:06d}.png" for idx in range(job.ledger.frame_count())]


def _result_frames(job: Job) -> Iterable[Any]:
    """What result.mp4 shows: out/ as rendered, or deflickered while encoding (out/ is left as it is)."""
    paths = _frame_paths(job, "out")
    coh = job.spec.coherence
    if not coh.deflicker or len(paths) < 2:
        return paths
    return deflicker_stream(paths, read_png, coh.deflicker_window, job_scenes(job))


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


def _side_by_side(job: Job) -> Iterator[np.ndarray]:
    for idx in range(job.ledger.frame_count()):
        yield np.hstack([read_png(job.src_path(idx)), read_png(job.control_path(idx)), read_png(job.out_path(idx))])


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


def write_outputs(job: Job, on_event: EventCallback = ignore_event) -> dict[str, Any]:
    """Encode result.mp4 and compare.mp4, then the report; progress and encoder warnings
    (audio dropped, frames padded) go to `on_event`."""
    counts = job.ledger.counts()
    total = job.ledger.frame_count()
    if counts["done"] != total:
        raise JobStateError(
            f"{counts['pending'] + counts['failed']} frames are not rendered yet; resume the job first."
        )
    audio = _audio_args(job)
    crf, preset = job.spec.encode.crf, job.spec.encode.preset
    result = encode_video(
        _counted(_result_frames(job), "result.mp4", total, on_event),
        job.result_path,
        fps=job.fps,
        on_warning=_warner(on_event, "result.mp4"),
        crf=crf,
        preset=preset,
        **audio,
    )
    # compare.mp4 carries the same audio: its warnings would repeat result.mp4's.
    encode_video(
        _counted(_side_by_side(job), "compare.mp4", total, on_event),
        job.compare_path,
        fps=job.fps,
        crf=crf,
        preset=preset,
        **audio,
    )
    if audio["audio_from"] is None:
        note = "none in the source" if job.spec.encode.keep_audio else "left out (keep_audio = false)"
    else:
        note = result.audio_note or ("kept" if result.audio_kept else "dropped")
    job.report_dir.mkdir(exist_ok=True)
    contact_sheet(_frame_paths(job, "out"), job.report_dir / "contact_sheet.png")
    report = build_report(job, note)
    atomic.write_text(job.report_dir / "report.json", json.dumps(report, indent=2, default=str))
    atomic.write_text(job.report_dir / "report.md", report_markdown(report))
    write_report_html(job, report)
    return report
