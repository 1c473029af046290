"""report/index.html: the page a person reads to judge a finished job, written by the finish stage.

Self-contained: the page and the PNGs it shows live together in JOB/report/ (no external URL,
no script), so it opens from disk, from the job API's files route, or inlined in the tab.
It shows the per-frame scores over time (suspect and repaired frames marked), the contact
sheet, the worst frames beside their source and canny map, every repaired frame's attempts,
the settings used (the JobSpec, which holds no credentials) and the coherence notes.

All text comes from the job (prompts, file names are user text) and is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from . import atomic
from .job import Job
from .scores import FrameScore, load_scores, worst_frames

PAGE_NAME = "index.html"
PLOT_NAME = "scores.png"
CONTACT_SHEET = "contact_sheet.png"
WORST_COUNT = 6
MAX_REPAIRED_SHOWN = 12  # a page with hundreds of before/after pairs is not read; the plot shows them all
MAX_IMAGE_SIDE = 384  # copies in report/ are for looking at, not for re-use: keep the folder small
# PNG names this module writes into report/; the job API serves exactly these (and the page).
FRAME_IMAGE = re.compile(r"^frame_\d{6}_(?:source|canny|result|attempt\d{1,4})\.png$")
REPORT_FILE = re.compile(
    r"^report/(?:index\.html|scores\.png|contact_sheet\.png|"
    r"frame_\d{6}_(?:source|canny|result|attempt\d{1,4})\.png)$"
)


@dataclass
class Attempt:
    attempt: int
    image: Path | None
    scores: dict[str, Any] = field(default_factory=dict)
    kept: bool = False


def is_report_file(name: str) -> bool:
    """Whether `name` (relative to the job folder, e.g. report/scores.png) is a report file clients may fetch."""
    return isinstance(name, str) and bool(REPORT_FILE.match(name))


# --------------------------------------------------------------------------- reading the ledger


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _json_object(text: Any) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def attempt_scores(job: Job) -> dict[int, dict[int, dict[str, Any]]]:
    """{frame: {attempt: scores}} from the ledger's attempts rows (older ledgers have no scores column)."""
    found: dict[int, dict[int, dict[str, Any]]] = {}
    try:
        cursor = job.ledger.db.execute("SELECT idx, attempt, scores FROM attempts ORDER BY idx, attempt")
    except sqlite3.OperationalError:
        cursor = job.ledger.db.execute("SELECT idx, attempt, NULL FROM attempts ORDER BY idx, attempt")
    for idx, attempt, text in cursor:
        found.setdefault(int(idx), {})[int(attempt)] = _json_object(text)
    return found


def repaired_frames(job: Job) -> dict[int, list[Attempt]]:
    """Frames rendered more than once, with every attempt whose image survives (history/ and out/)."""
    scores = attempt_scores(job)
    history = job.root / "history"
    on_disk: dict[int, set[int]] = {}
    if history.is_dir():
        for path in history.glob("*_a*.png"):
            match = re.match(r"^(\d{6})_a(\d+)\.png$", path.name)
            if match:
                on_disk.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    current = {int(i): int(a) for i, a in job.ledger.db.execute("SELECT idx, attempt FROM frames")}
    repaired: dict[int, list[Attempt]] = {}
    for idx in sorted(set(on_disk) | {i for i, a in current.items() if a > 0}):
        kept = current.get(idx, 0)
        numbers = sorted(on_disk.get(idx, set()) | set(scores.get(idx, {})) | {kept})
        attempts = []
        for number in numbers:
            kept_copy = job.history_path(idx, number)
            image = kept_copy if kept_copy.is_file() else job.out_path(idx) if number == kept else None
            attempts.append(
                Attempt(
                    number,
                    image if image and image.is_file() else None,
                    scores.get(idx, {}).get(number, {}),
                    number == kept,
                )
            )
        if len(attempts) > 1:
            repaired[idx] = attempts
    return repaired


def coherence_notes(job: Job) -> list[str]:
    """Fallbacks and notes the coherence stage recorded (ledger meta `coherence_notes`), as text."""
    notes = job.ledger.get_meta("coherence_notes")
    if notes is None:
        return []
    if isinstance(notes, (str, dict)):
        notes = [notes]
    if not isinstance(notes, list):
        return [str(notes)]
    out = []
    for note in notes:
        if isinstance(note, dict):
            out.append("; ".join(f"{k}: {v}" for k, v in note.items()))
        else:
            out.append(str(note))
    return out


# --------------------------------------------------------------------------- images


def _copy_small(source: Path, target: Path) -> bool:
    """A downscaled PNG copy of `source` (False when the source is gone, e.g. dropped intermediates)."""
    if not source.is_file():
        return False
    with Image.open(source) as image:
        image = image.convert("RGB")
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
        with atomic.atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
    return True


class _Copier:
    """Makes the page's downscaled frame copies, on a pool's threads when given one (Pillow
    releases the GIL while it decodes, resizes and encodes), so they overlap the plot."""

    def __init__(self, pool: Executor | None) -> None:
        self._pool = pool
        self._futures: list[Future[bool]] = []

    def __call__(self, source: Path, target: Path) -> bool:
        """Whether the page may show `target` (the source exists); the copy may still be in progress."""
        if not source.is_file():
            return False
        if self._pool is None:
            return _copy_small(source, target)
        self._futures.append(self._pool.submit(_copy_small, source, target))
        return True

    def wait(self) -> None:
        """Every copy written (raises what a copy raised): only then may the page name them."""
        for future in self._futures:
            future.result()


def preload_plotting() -> None:
    """Import matplotlib (about half a second) on a thread while frames render, so the report
    after the last frame does not wait for it."""
    threading.Thread(target=_import_plotting, name="vidstyle-preload-plotting", daemon=True).start()


def _import_plotting() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return  # plot_scores reports it when the report is written, on the job's thread


def plot_scores(scores: dict[int, FrameScore], repaired: Sequence[int], frame_count: int, out: Path) -> None:
    """Edge fidelity and warp error over the frames; suspect frames as red crosses, repaired ones as green lines.

    matplotlib's object API with the Agg canvas: no pyplot, so no global state in a host process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = sorted(scores)
    figure = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for axis, key, label in (
        (top, "edge_fidelity", "edge fidelity (higher is better)"),
        (bottom, "warp_error", "warp error (lower is better)"),
    ):
        xs = [f for f in frames if getattr(scores[f], key) is not None]
        ys = [getattr(scores[f], key) for f in xs]
        axis.plot(xs, ys, color="#2563eb", linewidth=1.2, marker="." if len(xs) < 200 else None, label=label)
        suspects = [f for f in xs if scores[f].suspect]
        if suspects:
            axis.scatter(
                suspects,
                [getattr(scores[f], key) for f in suspects],
                color="#dc2626",
                marker="x",
                s=60,
                zorder=3,
                label="suspect",
            )
        for n, frame in enumerate(repaired):
            axis.axvline(frame, color="#16a34a", linewidth=1.5, zorder=0, label="repaired" if n == 0 else None)
        axis.set_ylabel(key.replace("_", " "))
        axis.grid(True, alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    bottom.set_xlabel("frame")
    bottom.set_xlim(-0.5, max(frame_count - 0.5, 0.5))
    figure.tight_layout()
    with atomic.atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")


# --------------------------------------------------------------------------- the page


def _score_text(data: dict[str, Any]) -> str:
    parts = []
    for key in ("edge_fidelity", "warp_error"):
        value = _number(data.get(key))
        if value is not None:
            parts.append(f"{key.replace('_', ' ')} {value:.3f}")
    if data.get("suspect"):
        parts.append("suspect")
    return ", ".join(parts) or "no scores"


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'


def _figure(name: str | None, caption: str) -> str:
    inner = _img(name, caption) if name else '<div class="missing">not kept</div>'
    return f"<figure>{inner}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _worst_section(job: Job, rows: list[FrameScore], report_dir: Path, written: set[str], copy: _Copier) -> str:
    if not rows:
        return "<p>No per-frame scores were recorded for this job.</p>"
    blocks = []
    for row in rows:
        cells = []
        for kind, source in (
            ("source", job.src_path(row.frame)),
            ("canny", job.control_path(row.frame)),
            ("result", job.out_path(row.frame)),
        ):
            name = f"frame_{row.frame:06d}_{kind}.png"
            ok = copy(source, report_dir / name)
            if ok:
                written.add(name)
            cells.append(_figure(name if ok else None, kind))
        data = {"edge_fidelity": row.edge_fidelity, "warp_error": row.warp_error, "suspect": row.suspect}
        blocks.append(
            f'<div class="frame"><h3>Frame {row.frame}</h3><p>{html.escape(_score_text(data))}</p>'
            f'<div class="row">{"".join(cells)}</div></div>'
        )
    return "".join(blocks)


def _repaired_section(
    job: Job, repaired: dict[int, list[Attempt]], report_dir: Path, written: set[str], copy: _Copier
) -> str:
    if not repaired:
        return "<p>No frame was repaired or redone.</p>"
    blocks = []
    for idx in sorted(repaired)[:MAX_REPAIRED_SHOWN]:
        cells = []
        for attempt in repaired[idx]:
            name = f"frame_{idx:06d}_attempt{attempt.attempt}.png"
            ok = attempt.image is not None and copy(attempt.image, report_dir / name)
            if ok:
                written.add(name)
            label = f"attempt {attempt.attempt}{' (kept)' if attempt.kept else ''}: {_score_text(attempt.scores)}"
            cells.append(_figure(name if ok else None, label))
        blocks.append(f'<div class="frame"><h3>Frame {idx}</h3><div class="row">{"".join(cells)}</div></div>')
    more = len(repaired) - MAX_REPAIRED_SHOWN
    tail = f"<p>{more} more repaired frame(s) are marked in the plot.</p>" if more > 0 else ""
    return "".join(blocks) + tail


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
.row { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 256px; } figure img { width: 256px; height: auto; display: block; }
figcaption { font-size: .85em; color: #555; }
.frame h3 { margin: .8em 0 .2em; } .frame p { margin: 0 0 .3em; color: #444; }
.missing { width: 160px; height: 90px; background: #eee; color: #888; display: flex; align-items: center;
           justify-content: center; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
img.wide { max-width: 100%; }
"""


def page(
    job: Job,
    report: dict[str, Any],
    scores: dict[int, FrameScore],
    worst_html: str,
    repaired_html: str,
    repaired: Sequence[int],
    notes: Sequence[str],
    has_plot: bool,
    has_sheet: bool,
) -> str:
    esc = html.escape
    suspects = [f for f, row in sorted(scores.items()) if row.suspect]
    summary = [
        ("Source", Path(str(report.get("source") or "")).name),
        ("Frames", f"{report.get('frames')} at {float(report.get('fps') or 0):.3f} fps, {report.get('size')}"),
        ("Backend", ", ".join(report.get("backend") or []) or "n/a"),
        ("Audio", str(report.get("audio") or "")),
        ("Suspect frames", ", ".join(map(str, suspects)) or ("none" if scores else "not scored")),
        ("Repaired frames", ", ".join(map(str, repaired)) or "none"),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary)
    plot = (
        f"<p>{_img(PLOT_NAME, 'scores over time')}</p>".replace("<img ", '<img class="wide" ', 1)
        if has_plot
        else "<p>No per-frame scores were recorded for this job.</p>"
    )
    sheet = (
        f"<p>{_img(CONTACT_SHEET, 'contact sheet')}</p>".replace("<img ", '<img class="wide" ', 1)
        if has_sheet
        else "<p>No contact sheet.</p>"
    )
    notes_html = ("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>") if notes else "<p>None.</p>"
    title = f"Vidstyle job {Path(str(report.get('job') or job.root)).name}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(title)}</h1>
<table>{rows}</table>
<p>Outputs: result.mp4, compare.mp4 (source | canny | result), report.json, report.md.</p>
<h2>Scores over time</h2>
<p>Edge fidelity: how well the output keeps the source's outlines. Warp error: how far the output departs from the
previous output carried along the source's motion. Red crosses mark suspect frames (outliers against this job's own
frames); green lines mark repaired or redone frames.</p>
{plot}
<h2>Contact sheet</h2>
{sheet}
<h2>Worst frames</h2>
{worst_html}
<h2>Repaired frames: before and after</h2>
{repaired_html}
<h2>Coherence notes</h2>
{notes_html}
<h2>Settings used</h2>
<pre>{esc(job.spec.to_toml())}</pre>
</body></html>
"""


def write_report_html(
    job: Job, report: dict[str, Any], pool: Executor | None = None, before_page: Callable[[], object] | None = None
) -> Path:
    """Write report/index.html and its PNGs; PNGs of an earlier report that this one no longer shows are removed.

    The PNGs are written (atomically) before the page, so the page never names a missing file.
    `pool`: threads for the frame copies; `before_page`: waits for other files the page shows
    (the contact sheet being written beside it).
    """
    report_dir = job.report_dir
    report_dir.mkdir(exist_ok=True)
    scores = load_scores(job)
    repaired = repaired_frames(job)
    written: set[str] = set()
    copy = _Copier(pool)
    worst = [scores[idx] for idx in worst_frames(scores, WORST_COUNT)] if scores else []
    worst_html = _worst_section(job, worst, report_dir, written, copy)
    repaired_html = _repaired_section(job, repaired, report_dir, written, copy)
    has_plot = bool(scores)
    if has_plot:  # on this thread while the copies are made on the pool's
        plot_scores(scores, sorted(repaired), job.ledger.frame_count(), report_dir / PLOT_NAME)
    copy.wait()
    if before_page is not None:
        before_page()
    text = page(
        job,
        report,
        scores,
        worst_html,
        repaired_html,
        sorted(repaired),
        coherence_notes(job),
        has_plot,
        (report_dir / CONTACT_SHEET).is_file(),
    )
    path = report_dir / PAGE_NAME
    atomic.write_text(path, text)
    for stale in report_dir.glob("frame_*.png"):
        if FRAME_IMAGE.match(stale.name) and stale.name not in written:
            stale.unlink(missing_ok=True)
    if not has_plot:
        (report_dir / PLOT_NAME).unlink(missing_ok=True)
    return path


def embedded_report(path: Path) -> str:
    """The page with its PNGs inlined as data: URIs, for showing it where relative links do not
    resolve (the tab shows it in a sandboxed iframe). Only names the page itself uses are read."""
    text = Path(path).read_text(encoding="utf-8")
    folder = Path(path).parent

    def inline(match: re.Match[str]) -> str:
        name = html.unescape(match.group(1))
        target = folder / name
        if not (name == PLOT_NAME or name == CONTACT_SHEET or FRAME_IMAGE.match(name)) or not target.is_file():
            return match.group(0)
        data = base64.b64encode(target.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([^"]+)"', inline, text)
