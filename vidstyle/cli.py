"""`vidstyle` command line: stylize, resume, redo, probe, demo, ui, serve.

Job options are generated from the JobSpec field declarations (default, bounds, help),
so the CLI, the tab and presets cannot drift apart. User errors print one sentence and
exit with the error's code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import __version__
from .errors import SpecError, UserInputError, run_command
from .spec import field_info, list_presets, load_spec, tomllib

# flag -> JobSpec field. Help text, defaults and choices come from the field declaration.
SPEC_FLAGS: List[Tuple[str, str]] = [
    ("--prompt", "prompt"),
    ("--negative-prompt", "negative_prompt"),
    ("--model", "model.checkpoint"),
    ("--controlnet-model", "controlnet.model"),
    ("--controlnet-weight", "controlnet.weight"),
    ("--guidance-start", "controlnet.guidance_start"),
    ("--guidance-end", "controlnet.guidance_end"),
    ("--control-mode", "controlnet.control_mode"),
    ("--canny-low", "controlnet.low_threshold"),
    ("--canny-high", "controlnet.high_threshold"),
    ("--canny-blur", "controlnet.blur"),
    ("--preprocessor", "controlnet.preprocessor"),
    ("--width", "size.width"),
    ("--height", "size.height"),
    ("--fit", "size.fit"),
    ("--denoise", "sampling.denoise"),
    ("--steps", "sampling.steps"),
    ("--cfg-scale", "sampling.cfg_scale"),
    ("--sampler", "sampling.sampler"),
    ("--scheduler", "sampling.scheduler"),
    ("--seed", "sampling.seed"),
    ("--seed-policy", "sampling.seed_policy"),
    ("--start", "source.start_time"),
    ("--end", "source.end_time"),
    ("--start-frame", "source.start_frame"),
    ("--end-frame", "source.end_frame"),
    ("--every-nth", "source.every_nth"),
    ("--fps", "source.target_fps"),
    ("--crf", "encode.crf"),
    ("--backend", "backend.kind"),
    ("--device", "backend.device"),
    ("--webui-auth", "backend.webui_auth"),
    ("--requests-per-server", "backend.requests_per_server"),
    ("--timeout", "backend.timeout"),
]
# Flags that only make sense when rendering again (redo): sampling, not preparation.
REDO_FLAGS = {"--prompt", "--negative-prompt", "--model", "--controlnet-model", "--controlnet-weight",
              "--guidance-start", "--guidance-end", "--control-mode", "--denoise", "--steps", "--cfg-scale",
              "--sampler", "--scheduler", "--seed", "--seed-policy"}


def _dest(dotted: str) -> str:
    return "spec__" + dotted.replace(".", "__")


def _add_spec_flags(parser: argparse.ArgumentParser, only: Optional[set] = None) -> None:
    group = parser.add_argument_group("job settings (override the preset)")
    for flag, dotted in SPEC_FLAGS:
        if only is not None and flag not in only:
            continue
        info = field_info(dotted)
        bounds = ", ".join(f"{k} {info[k]}" for k in ("ge", "gt", "le", "lt", "multiple_of") if k in info)
        help_text = info["help"] + (f" [{bounds}]" if bounds else "") + f" (default: {info['default']})"
        group.add_argument(flag, dest=_dest(dotted), default=None, choices=info["choices"], help=help_text, metavar=None if info["choices"] else "V")
    if only is None or "--lora" in only:
        group.add_argument("--lora", action="append", default=None, metavar="NAME[:WEIGHT]",
                           help="LoRA to apply, repeatable (default weight 0.8).")
    if only is None:
        group.add_argument("--webui", action="append", default=None, metavar="URL",
                           help="Render on a running WebUI (started with --api); repeat for several servers.")
        group.add_argument("--no-audio", action="store_true", help="Leave the source audio out of result.mp4.")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Any JobSpec field by its dotted name, e.g. --set sampling.steps=30.")


def _parse_value(text: str) -> Any:
    """TOML value syntax (30, 0.5, true, [..]); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _parse_lora(text: str) -> Dict[str, Any]:
    name, sep, weight = text.rpartition(":")
    if sep and name:
        try:
            return {"name": name, "weight": float(weight)}
        except ValueError:
            pass
    return {"name": text, "weight": 0.8}


def collect_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    for flag, dotted in SPEC_FLAGS:
        value = getattr(args, _dest(dotted), None)
        if value is not None:
            overrides[dotted] = value
    if getattr(args, "lora", None):
        overrides["model.loras"] = [_parse_lora(text) for text in args.lora]
    if getattr(args, "webui", None):
        overrides["backend.webui_urls"] = args.webui
        overrides.setdefault("backend.kind", "webui_api")
    if getattr(args, "no_audio", False):
        overrides["encode.keep_audio"] = False
    # 'tiny' is a matched UNet + ControlNet pair; a real ControlNet cannot drive it.
    if overrides.get("model.checkpoint") == "tiny":
        overrides.setdefault("controlnet.model", "tiny")
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set takes KEY=VALUE, got '{item}'.")
        overrides[key.strip()] = _parse_value(value.strip())
    return overrides


# -- progress -----------------------------------------------------------------------------
class ProgressPrinter:
    """tqdm bar for frames, plain lines for stages and status messages."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.stage = ""

    def __call__(self, event: Any) -> None:
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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run(job: Any, quiet: bool) -> int:
    from .render import CancelToken, run_job

    printer = ProgressPrinter(quiet)
    cancel = CancelToken()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        # First Ctrl-C stops cleanly (in-flight frames finish or are interrupted); a second one is immediate.
        cancel.cancel()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        run_job(job, on_event=printer, cancel=cancel)
    finally:
        printer.close()
        signal.signal(signal.SIGINT, previous)
    report = json.loads((job.report_dir / "report.json").read_text())
    print(f"done: {job.result_path}")
    print(f"      {job.compare_path} (source | canny | result)")
    print(f"      {job.report_dir / 'contact_sheet.png'}, {job.report_dir / 'report.md'}")
    print(f"audio: {report['audio']}")
    return 0


# -- commands -----------------------------------------------------------------------------
def cmd_stylize(args: argparse.Namespace) -> int:
    from .job import create_job

    overrides = collect_overrides(args)
    overrides["source.path"] = str(args.video)
    spec = load_spec(args.preset, overrides)
    job = create_job(spec, Path(args.output))
    with job:
        print(f"job folder: {job.root}", file=sys.stderr)
        status = _run(job, args.quiet)
        if args.drop_intermediate:
            from .job import drop_intermediates

            drop_intermediates(job)
        return status


def cmd_resume(args: argparse.Namespace) -> int:
    from .job import open_job

    with open_job(Path(args.job)) as job:
        counts = job.ledger.counts()
        print(f"resuming {job.root}: {counts['done']} done, {counts['pending'] + counts['failed']} to go", file=sys.stderr)
        return _run(job, args.quiet)


def cmd_redo(args: argparse.Namespace) -> int:
    from .job import open_job
    from .render import parse_frame_list, schedule_redo

    with open_job(Path(args.job)) as job:
        if job.ledger.frame_count() == 0:
            raise UserInputError(f"{job.root} has not finished preparing; run `vidstyle resume {job.root}` first.")
        frames = parse_frame_list(args.frames, job.ledger.frame_count())
        schedule_redo(job, frames, collect_overrides(args))
        print(f"re-rendering {len(frames)} frame(s); earlier attempts are kept in {job.root / 'history'}", file=sys.stderr)
        return _run(job, args.quiet)


def cmd_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .video import probe

    info = probe(args.video)
    data = asdict(info)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for key, value in data.items():
        print(f"{key:>16}: {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.output), quiet=args.quiet, frames=args.frames, size=args.size)


def cmd_ui(args: argparse.Namespace) -> int:
    from .standalone import serve_ui

    return serve_ui(host=args.host, port=args.port, output_root=Path(args.output_root))


def cmd_serve(args: argparse.Namespace) -> int:
    from .standalone import serve_api

    roots = [Path(p) for p in args.allow] if args.allow else None
    return serve_api(host=args.host, port=args.port, output_root=Path(args.output_root), auth=args.auth, allowed_roots=roots)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidstyle", description="Stylize a video with SD img2img + LoRA + ControlNet canny.")
    parser.add_argument("--version", action="version", version=f"vidstyle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="Render a video into a new job folder.")
    p.add_argument("video", help="Source video file, or a folder of frames.")
    p.add_argument("-o", "--output", required=True, help="New job folder (must not exist or be empty).")
    p.add_argument("--preset", default=None, help=f"Preset name ({', '.join(list_presets())}) or a .toml path.")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--drop-intermediate", action="store_true",
                   help="Delete src/ and control/ when the job finishes (rebuilt from the video if you redo frames).")
    _add_spec_flags(p)
    p.set_defaults(run=cmd_stylize)

    p = sub.add_parser("resume", help="Continue an interrupted job; gives the same pixels as an uninterrupted run.")
    p.add_argument("job")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=cmd_resume)

    p = sub.add_parser("redo", help="Render chosen frames again (earlier attempts are kept), then re-encode.")
    p.add_argument("job")
    p.add_argument("--frames", required=True, help="Frames like 10-20,45 (inclusive).")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_spec_flags(p, only=REDO_FLAGS | {"--lora"})
    p.set_defaults(run=cmd_redo)

    p = sub.add_parser("probe", help="Show a video's size, fps, frames, rotation and audio.")
    p.add_argument("video")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("demo", help="Make a short clip and render it with the tiny built-in model.")
    p.add_argument("-o", "--output", default="demo-output", help="Folder for the demo clip and job (default: demo-output).")
    p.add_argument("--frames", type=int, default=24, help="Frames to render (default 24).")
    p.add_argument("--size", type=int, default=256, help="Frame size in pixels, multiple of 8 (default 256).")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=cmd_demo)

    for name, helptext, func in (("ui", "Serve the Video Stylize tab standalone (gradio).", cmd_ui),
                                 ("serve", "Serve the /vidstyle/v1 job API standalone.", cmd_serve)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=7870 if name == "ui" else 7871)
        p.add_argument("--output-root", default="outputs/vidstyle", help="Where jobs are written.")
        if name == "serve":
            p.add_argument("--auth", default=None, metavar="USER:PASS", help="Require HTTP basic auth.")
            p.add_argument("--allow", action="append", default=None, metavar="DIR",
                           help="Folder whose videos jobs may name by path; repeatable (default: the current folder).")
        p.set_defaults(run=func)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
