"""The tab's status box, job list and report frame as HTML/Markdown text: pure helpers with no gradio import."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report_html import embedded_report


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def status_html(status: Mapping[str, Any] | None, error: str = "", note: str = "") -> str:
    """The progress box: state, a progress bar, frames, speed, ETA and the latest message."""
    if error:
        return (
            f'<div class="vidstyle-status vidstyle-error" style="color:#dc2626">'
            f"<b>Error:</b> {html.escape(error)}</div>"
        )
    if not status:
        return f'<div class="vidstyle-status">{html.escape(note or "No job selected.")}</div>'
    frames, done = int(status.get("frames") or 0), int(status.get("done") or 0)
    fps = status.get("fps")
    speed = f"{fps:.2f} frames/s" if fps else "–"
    failed = f", {status['failed']} failed" if status.get("failed") else ""
    return (
        f'<div class="vidstyle-status" data-state="{html.escape(str(status.get("state")))}">'
        f"<b>{html.escape(str(status.get('id')))}</b>: {html.escape(str(status.get('state')))}"
        f'<br><progress value="{done}" max="{max(frames, 1)}" style="width:100%;height:1.1em"></progress>'
        f"<br>{done}/{frames} frames{failed} · {speed} · ETA {_eta(status.get('eta_seconds'))}"
        f"<br><small>{html.escape(str(status.get('message') or ''))}</small>{_warnings_line(status.get('warnings'))}"
        f"{_scores_line(status.get('scores'))}</div>"
    )


def _warnings_line(warnings: list[str] | None) -> str:
    """What the job reported without stopping (e.g. the audio was dropped while encoding)."""
    if not warnings:
        return ""
    text = "; ".join(html.escape(str(w)) for w in warnings)
    return f'<br><small class="vidstyle-warnings" style="color:#b45309">Warning: {text}</small>'


def _scores_line(scores: Mapping[str, Any] | None) -> str:
    """The job's per-frame score summary (status["scores"]), one line; nothing before frames are scored."""
    if not scores:
        return ""
    from .scores import describe_summary

    return f'<br><small class="vidstyle-scores">{html.escape(describe_summary(dict(scores)))}</small>'


def jobs_markdown(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return "No jobs yet."
    rows = ["| job | state | frames | message |", "|---|---|---|---|"]
    for job in jobs:
        message = str(job.get("message") or "").replace("|", "/")[:120]
        rows.append(f"| {job['id']} | {job.get('state')} | {job.get('done', 0)}/{job.get('frames', 0)} | {message} |")
    return "\n".join(rows)


def report_frame(path: Path | None) -> str:
    """The job's report/index.html in a sandboxed frame (no scripts), its images inlined by the engine."""
    if path is None:
        return ""
    page = embedded_report(path)
    return (
        f'<iframe title="Job report" sandbox="" srcdoc="{html.escape(page, quote=True)}" '
        'style="width:100%;height:720px;border:1px solid #ddd;background:white"></iframe>'
    )


def report_text(path: Path | None) -> str:
    if path is None:
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("!["))  # the sheet is shown as an image
