"""Running one job in a terminal: the progress bar, Ctrl-C, and the closing lines saying where results are.

Shared by the CLI commands and `vidstyle demo` (which imports this, not the CLI).
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from .events import ProgressEvent


class ProgressPrinter:
    """tqdm bar for frames, plain lines for stages and status messages."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.stage = ""

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if event.kind == "stage" and event.stage != self.stage:
            self.close()
            self.stage = event.stage
            if event.message:
                print(f"[{event.stage}] {event.message}", file=sys.stderr)
        if event.kind == "stage" and event.stage == "render":
            self.bar = tqdm(total=event.total, initial=event.done, unit="frame", desc="render", dynamic_ncols=True)
        elif event.kind == "frame" and self.bar is not None:
            self.bar.update(1)
        elif event.kind == "progress" and self.bar is not None and event.eta_seconds is not None:
            self.bar.set_postfix_str(f"frame {event.frame_fraction or 0:.0%}, ETA {event.eta_seconds:.0f}s")
        elif event.kind in ("status", "failed"):
            (self.bar.write if self.bar is not None else print)(f"  {event.message}")
        elif event.kind == "warning":
            line = f"  warning: {event.message}"
            self.bar.write(line, file=sys.stderr) if self.bar is not None else print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_in_terminal(
    job: Any,
    quiet: bool,
    printer: ProgressPrinter | None = None,
    backend: Any = None,
    preflighted: bool = False,
    **run_options: Any,
) -> int:
    """Run a job with a progress bar; the first Ctrl-C cancels it cleanly. Prints where the results are."""
    from .render import CancelToken, run_job

    printer = printer or ProgressPrinter(quiet)
    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        # First Ctrl-C stops cleanly (in-flight frames finish or are interrupted); a second one is immediate.
        cancel.cancel()
        signal.signal(signal.SIGINT, previous)

    # Ignored SIGINT (a background job of a shell script) stays ignored: the Ctrl-C it would
    # receive is meant for the foreground command, not for this render.
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        run_job(job, backend=backend, on_event=printer, cancel=cancel, preflighted=preflighted, **run_options)
    finally:
        printer.close()
        signal.signal(signal.SIGINT, previous)
    report = json.loads((job.report_dir / "report.json").read_text())
    print(f"done: {job.result_path}")
    print(f"      {job.compare_path} (source | canny | result)")
    print(f"      {job.report_dir / 'index.html'} (report: scores, worst frames, repairs)")
    print(f"      {job.report_dir / 'contact_sheet.png'}, {job.report_dir / 'report.md'}")
    print(f"audio: {report['audio']}")
    from .scores import describe_summary, scores_summary

    print(describe_summary(scores_summary(job)))
    return 0
