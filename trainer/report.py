"""`python -m trainer report RUN`: the evidence for picking an epoch, as files to look at.

    RUN/report/loss.png      training loss per step; training and validation loss per epoch
    RUN/report/grid.png      epoch x prompt grid of the sample images (row 0: before training),
                             the recommended row marked, the recommendation written beside it
    RUN/report/summary.md    per-epoch table (loss, validation loss, file) + recommendation
    RUN/report/summary.json  the same, for programs
    RUN/report/index.html    all of it on one page

Plots use matplotlib's object API (no pyplot global state); the grid is drawn with Pillow.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from vidstyle.atomic import atomic_path, write_text
from vidstyle.errors import UserInputError

from .evidence import EpochRow, Evidence, gather
from .run import load_run

BACKGROUND = (255, 255, 255)
HIGHLIGHT = (255, 244, 200)
MARK = (214, 120, 0)
TEXT = (30, 30, 30)
MUTED = (120, 120, 120)
LABEL_WIDTH = 190
SIDE_WIDTH = 320


@dataclass
class Report:
    dir: Path
    evidence: Evidence

    @property
    def recommended(self) -> int | None:
        return self.evidence.recommended

    def table_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "epoch": r.epoch,
                "train_loss": _finite(r.train_loss),
                "val_loss": _finite(r.val_loss),
                "file": r.file.name if r.file else None,
                "samples": len(r.samples),
                "recommended": r.epoch == self.recommended,
            }
            for r in self.evidence.rows
        ]

    def recommendation_text(self) -> str:
        ev = self.evidence
        if self.recommended is None:
            return (
                "No recommendation: there is no validation loss for a saved epoch. Compare the rows of the sample grid."
            )
        row = ev.row(self.recommended)
        assert row is not None and row.val_loss is not None
        return (
            f"Lowest validation loss: epoch {row.epoch} ({row.val_loss:.4f}, "
            f"{row.file.name if row.file else 'no file'}). "
            "Check its row in the grid against its neighbours before choosing; the loss is evidence, not a verdict."
        )

    def summary_text(self) -> str:
        lines = ["| epoch | train loss | validation loss | LoRA file | samples |", "|---:|---:|---:|---|---:|"]
        for row in self.table_rows():
            mark = " **(lowest val)**" if row["recommended"] else ""
            lines.append(
                f"| {row['epoch']}{mark} | {_fmt(row['train_loss'])} | {_fmt(row['val_loss'])} | {row['file'] or '—'} "
                f"| {row['samples']} |"
            )
        lines += ["", self.recommendation_text()]
        lines += [f"Note: {note}" for note in self.evidence.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "run": str(ev.run.dir),
            "output_name": ev.run.output_name,
            "trigger": ev.run.trigger,
            "loss_source": ev.source,
            "recommended_epoch": self.recommended,
            "recommendation": self.recommendation_text(),
            "epochs": self.table_rows(),
            "prompts": [p.get("prompt", "") for p in ev.prompts],
            "notes": ev.notes,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "—"


# --------------------------------------------------------------------------- fonts


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans from matplotlib (always installed with it) so text scales on Pillow 9.5 too."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=face)
    return right - left


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, max_lines: int
) -> list[str]:
    chars = max(8, int(width / max(1, _text_width(draw, "n", face))))
    lines = textwrap.wrap(text, width=chars, break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars - 1)].rstrip() + "…"
    return lines


# --------------------------------------------------------------------------- grid


def draw_grid(evidence: Evidence, path: Path, thumb: int = 192) -> Path | None:
    """Rows = epochs (0 = before training), columns = prompts; None when there are no samples."""
    rows = [r for r in evidence.rows if r.samples]
    if not rows:
        return None
    columns = max(max(r.samples) for r in rows) + 1
    columns = max(columns, len(evidence.prompts))
    small, normal = font(12), font(15)
    header = 16 * 4 + 12
    gap = 6
    width = LABEL_WIDTH + columns * (thumb + gap) + gap + SIDE_WIDTH
    height = header + len(rows) * (thumb + gap) + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index in range(columns):
        info = evidence.prompts[index] if index < len(evidence.prompts) else {"prompt": "(not in sample_prompts.txt)"}
        label = f"{index}: {'(held-out) ' if info.get('source') == 'heldout' else ''}{info.get('prompt', '')}"
        x = LABEL_WIDTH + gap + index * (thumb + gap)
        for line_no, line in enumerate(_wrap(draw, label, small, thumb, 4)):
            draw.text((x, 4 + line_no * 16), line, fill=TEXT, font=small)
    for row_no, row in enumerate(rows):
        top = header + row_no * (thumb + gap)
        _draw_row(canvas, draw, row, top, columns, thumb, gap, row.epoch == evidence.recommended, normal, small)
    _draw_side(draw, evidence, width - SIDE_WIDTH + 10, header, normal, small)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _draw_row(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    row: EpochRow,
    top: int,
    columns: int,
    thumb: int,
    gap: int,
    marked: bool,
    normal: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    small: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    right = LABEL_WIDTH + columns * (thumb + gap) + gap
    if marked:
        draw.rectangle((0, top - gap // 2, right, top + thumb + gap // 2), fill=HIGHLIGHT, outline=MARK, width=3)
    label = "before training" if row.epoch == 0 else f"epoch {row.epoch}"
    draw.text((10, top + 6), ("★ " if marked else "") + label, fill=MARK if marked else TEXT, font=normal)
    details = [f"train {_fmt(row.train_loss)}", f"val   {_fmt(row.val_loss)}"]
    details.append(row.file.stem if row.file else ("base model" if row.epoch == 0 else "no LoRA file"))
    for n, line in enumerate(details):
        draw.text((10, top + 30 + n * 17), _wrap(draw, line, small, LABEL_WIDTH - 16, 1)[0], fill=MUTED, font=small)
    for index in range(columns):
        x = LABEL_WIDTH + gap + index * (thumb + gap)
        path = row.samples.get(index)
        cell = _thumbnail(path, thumb) if path else None
        if cell is None:
            draw.rectangle((x, top, x + thumb - 1, top + thumb - 1), fill=(235, 235, 235))
            draw.text((x + thumb // 2 - 8, top + thumb // 2 - 8), "—", fill=MUTED, font=normal)
        else:
            canvas.paste(cell, (x, top))


def _thumbnail(path: Path, size: int) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return ImageOps.pad(image.convert("RGB"), (size, size), color=(235, 235, 235))
    except (OSError, ValueError):
        return None


def _draw_side(
    draw: ImageDraw.ImageDraw,
    evidence: Evidence,
    x: int,
    top: int,
    normal: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    small: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """The recommendation sits beside the grid, never in its place."""
    if evidence.recommended is None:
        title, body = (
            "No recommendation",
            "There is no validation loss. Judge the rows by eye: likeness, anatomy, and whether the prompt still "
            "works.",
        )
    else:
        row = evidence.row(evidence.recommended)
        assert row is not None and row.val_loss is not None
        title = f"★ epoch {row.epoch}: lowest validation loss"
        body = (
            f"Validation loss {row.val_loss:.4f} on images the LoRA never saw. "
            "Evidence, not a verdict: compare this row with its neighbours for likeness and anatomy before choosing."
        )
    title_lines = _wrap(draw, title, normal, SIDE_WIDTH - 20, 2)
    for n, line in enumerate(title_lines):
        draw.text((x, top + n * 20), line, fill=MARK, font=normal)
    for n, line in enumerate(_wrap(draw, body, small, SIDE_WIDTH - 20, 12)):
        draw.text((x, top + 6 + 20 * len(title_lines) + n * 16), line, fill=TEXT, font=small)


# --------------------------------------------------------------------------- loss curves


def draw_losses(evidence: Evidence, path: Path) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = {tag: series for tag, series in evidence.step_losses.items() if series}
    epoch_rows = [r for r in evidence.rows if r.epoch > 0 and (r.train_loss is not None or r.val_loss is not None)]
    if not steps and not epoch_rows:
        return None
    figure = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    labels = {"loss/current": ("loss per step", 0.25), "loss/average": ("moving average (one epoch)", 1.0)}
    for tag, (label, alpha) in labels.items():
        series = sorted(steps.get(tag, []))
        if series:
            left.plot([s for s, _ in series], [v for _, v in series], label=label, alpha=alpha, linewidth=1)
    left.set(title="Training loss by step", xlabel="step", ylabel="loss")
    if steps:
        left.legend(loc="upper right")
    _epoch_axes(right, epoch_rows, evidence.recommended)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _epoch_axes(axes: Any, rows: list[EpochRow], recommended: int | None) -> None:
    for attr, label, style in (("train_loss", "training", "o-"), ("val_loss", "validation", "s-")):
        points = [
            (r.epoch, getattr(r, attr))
            for r in rows
            if getattr(r, attr) is not None and math.isfinite(getattr(r, attr))
        ]
        if points:
            axes.plot([e for e, _ in points], [v for _, v in points], style, label=label)
    if recommended is not None:
        axes.axvline(
            recommended,
            color="tab:green",
            linestyle="--",
            linewidth=1,
            label=f"lowest validation (epoch {recommended})",
        )
    axes.set(title="Loss by epoch", xlabel="epoch", ylabel="loss")
    if rows:
        axes.set_xticks(sorted({r.epoch for r in rows}))
        axes.legend(loc="best")


# --------------------------------------------------------------------------- page


def _html(report: Report, grid: Path | None, losses: Path | None) -> str:
    ev = report.evidence
    esc = html.escape
    rows = "".join(
        f'<tr class="{"best" if r["recommended"] else ""}"><td>{r["epoch"]}</td><td>{_fmt(r["train_loss"])}</td>'
        f"<td>{_fmt(r['val_loss'])}</td><td>{esc(r['file'] or '—')}</td><td>{r['samples']}</td></tr>"
        for r in report.table_rows()
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in ev.notes)
    grid_html = f'<img src="{grid.name}" alt="epoch x prompt sample grid">' if grid else "<p>No sample images yet.</p>"
    loss_html = f'<img src="{losses.name}" alt="loss curves">' if losses else "<p>No losses recorded yet.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(ev.run.output_name)}: training report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.side {{ display: flex; gap: 1.5em; align-items: flex-start; }}
.side aside {{ max-width: 22em; background: #fff4c8; border: 2px solid #d67800; padding: 0.8em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
tr.best {{ background: #fff4c8; font-weight: bold; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(ev.run.output_name)} (trigger: {esc(ev.run.trigger)})</h1>
<div class="side"><div>{grid_html}</div>
<aside><h2>Recommendation</h2><p>{esc(report.recommendation_text())}</p></aside></div>
<h2>Losses</h2>{loss_html}
<h2>Per epoch</h2>
<table><tr><th>epoch</th><th>train loss</th><th>validation loss</th><th>LoRA file</th><th>samples</th></tr>
{rows}</table>
<p>Loss source: {esc(ev.source)}.</p><ul>{notes}</ul>
</body></html>
"""


def build_report(run_dir: Path, thumb: int = 192) -> Report:
    if not 32 <= thumb <= 1024:
        raise UserInputError(f"--thumb must be between 32 and 1024 pixels, not {thumb}.")
    run = load_run(run_dir)
    evidence = gather(run)
    if not evidence.rows:
        raise UserInputError(
            f"{run.dir} has no trained epochs, samples or losses yet; run `python -m trainer train {run.dir}` first."
        )
    report = Report(run.dir / "report", evidence)
    report.dir.mkdir(parents=True, exist_ok=True)
    grid = draw_grid(evidence, report.dir / "grid.png", thumb)
    losses = draw_losses(evidence, report.dir / "loss.png")
    write_text(report.dir / "summary.md", f"# {run.output_name}: per-epoch summary\n\n{report.summary_text()}\n")
    write_text(report.dir / "summary.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    write_text(report.dir / "index.html", _html(report, grid, losses))
    return report
