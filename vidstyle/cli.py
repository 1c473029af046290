"""`vidstyle` command line: stylize, resume, redo, repair, probe, demo, ui, serve.

Job options are generated from the JobSpec field declarations (default, bounds, help),
so the CLI, the tab and presets cannot drift apart. User errors print one sentence and
exit with the error's code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserInputError, run_command
from .events import status_reporter
from .overrides import parse_value, split_assignment
from .spec import DEFAULT_PRESET, field_info, list_presets, load_spec
from .terminal import ProgressPrinter, run_in_terminal

# flag -> JobSpec field. Help text, defaults and choices come from the field declaration.
SPEC_FLAGS: list[tuple[str, str]] = [
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
    ("--auto-repair", "repair.enabled"),
    ("--repair-attempts", "repair.max_attempts"),
    ("--backend", "backend.kind"),
    ("--device", "backend.device"),
    ("--requests-per-server", "backend.requests_per_server"),
    ("--timeout", "backend.timeout"),
    ("--memory-mode", "backend.memory_mode"),
    ("--vae-slicing", "backend.vae_slicing"),
    ("--vae-tiling", "backend.vae_tiling"),
    ("--attention", "backend.attention"),
    ("--compile", "backend.compile"),
    ("--ray", "backend.ray_address"),
    ("--ray-workers", "backend.ray_workers"),
    ("--ray-gpus-per-worker", "backend.ray_gpus_per_worker"),
    ("--coherence", "coherence.mode"),
    ("--flow-denoise", "coherence.flow_denoise"),
    ("--source-mix", "coherence.source_mix"),
    ("--keyframe-interval", "coherence.keyframe_interval"),
    ("--coverage-threshold", "coherence.coverage_threshold"),
    ("--color-match", "coherence.color_match"),
    ("--color-match-strength", "coherence.color_match_strength"),
    ("--deflicker", "coherence.deflicker"),
    ("--deflicker-window", "coherence.deflicker_window"),
    ("--scene-cuts", "coherence.scene_cuts"),
    ("--scene-cut-z", "coherence.scene_cut_z"),
]
# Flags that only make sense when rendering again (redo): sampling, not preparation.
REDO_FLAGS = {
    "--prompt",
    "--negative-prompt",
    "--model",
    "--controlnet-model",
    "--controlnet-weight",
    "--guidance-start",
    "--guidance-end",
    "--control-mode",
    "--denoise",
    "--steps",
    "--cfg-scale",
    "--sampler",
    "--scheduler",
    "--seed",
    "--seed-policy",
}


def _dest(dotted: str) -> str:
    return "spec__" + dotted.replace(".", "__")


def _add_spec_flags(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    group = parser.add_argument_group("job settings (override the preset)")
    for flag, dotted in SPEC_FLAGS:
        if only is not None and flag not in only:
            continue
        info = field_info(dotted)
        bounds = ", ".join(f"{k} {info[k]}" for k in ("ge", "gt", "le", "lt", "multiple_of") if k in info)
        help_text = info["help"] + (f" [{bounds}]" if bounds else "") + f" (default: {info['default']})"
        group.add_argument(
            flag,
            dest=_dest(dotted),
            default=None,
            choices=info["choices"],
            help=help_text,
            metavar=None if info["choices"] else "V",
        )
    if only is None or "--lora" in only:
        group.add_argument(
            "--lora",
            action="append",
            default=None,
            metavar="NAME[:WEIGHT]",
            help="LoRA to apply, repeatable (default weight 0.8).",
        )
    if only is None:
        group.add_argument(
            "--webui",
            action="append",
            default=None,
            metavar="URL",
            help="Render on a running WebUI (started with --api); repeat for several servers.",
        )
        group.add_argument("--no-audio", action="store_true", help="Leave the source audio out of result.mp4.")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Any JobSpec field by its dotted name, e.g. --set sampling.steps=30.",
    )


def _parse_lora(text: str) -> dict[str, Any]:
    name, sep, weight = text.rpartition(":")
    if sep and name:
        try:
            return {"name": name, "weight": float(weight)}
        except ValueError:
            pass
    return {"name": text, "weight": 0.8}


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for _flag, dotted in SPEC_FLAGS:
        value = getattr(args, _dest(dotted), None)
        if value is not None:
            overrides[dotted] = value
    if getattr(args, "lora", None):
        overrides["model.loras"] = [_parse_lora(text) for text in args.lora]
    if getattr(args, "webui", None):
        overrides["backend.webui_urls"] = args.webui
        overrides.setdefault("backend.kind", "webui_api")
    if "backend.ray_address" in overrides:  # --ray auto|ADDRESS picks the backend, as --webui does
        overrides.setdefault("backend.kind", "ray")
    if getattr(args, "no_audio", False):
        overrides["encode.keep_audio"] = False
    # 'tiny' is a matched UNet + ControlNet pair; a real ControlNet cannot drive it.
    if overrides.get("model.checkpoint") == "tiny":
        overrides.setdefault("controlnet.model", "tiny")
    for item in getattr(args, "set", []) or []:
        key, value = split_assignment(item)
        overrides[key] = parse_value(value)  # TOML value syntax (30, 0.5, true, [..]); else a plain string
    return overrides


# -- commands -----------------------------------------------------------------------------
def cmd_stylize(args: argparse.Namespace) -> int:
    from .backends import create_backend
    from .render import start_job

    overrides = collect_overrides(args)
    overrides["source.path"] = str(args.video)
    spec = load_spec(args.preset or DEFAULT_PRESET, overrides)  # the tab and the job API start from it too
    printer = ProgressPrinter(args.quiet)
    backend = create_backend(spec, on_status=status_reporter(printer), webui_auth=args.webui_auth)
    try:
        # Source, output folder and preflight are checked before the job folder is written, so
        # a typo leaves nothing behind and the corrected command simply runs.
        job = start_job(spec, Path(args.output), backend, on_event=printer, replace_unstarted=True)
        with job:
            if job.replaced:
                print(f"replacing the earlier attempt in {job.root}: it had rendered no frame", file=sys.stderr)
            print(f"job folder: {job.root}", file=sys.stderr)
            status = run_in_terminal(job, args.quiet, printer, backend=backend, preflighted=True)
            if args.drop_intermediate:
                from .job import drop_intermediates

                drop_intermediates(job)
            return status
    finally:
        backend.close()


def cmd_resume(args: argparse.Namespace) -> int:
    from .job import open_job, retarget

    overrides = collect_overrides(args)
    with open_job(Path(args.job)) as job:
        job.webui_auth = args.webui_auth or job.webui_auth
        if overrides:  # only before the first frame: a fix for what made the first attempt fail
            retarget(job, overrides)
            print(f"new settings saved in {job.spec_path}", file=sys.stderr)
        counts = job.ledger.counts()
        print(
            f"resuming {job.root}: {counts['done']} done, {counts['pending'] + counts['failed']} to go", file=sys.stderr
        )
        return run_in_terminal(job, args.quiet)


def cmd_redo(args: argparse.Namespace) -> int:
    from .job import open_job
    from .render import parse_frame_list, schedule_redo

    with open_job(Path(args.job)) as job:
        job.webui_auth = args.webui_auth or job.webui_auth
        if job.ledger.frame_count() == 0:
            raise UserInputError(f"{job.root} has not finished preparing; run `vidstyle resume {job.root}` first.")
        frames = parse_frame_list(args.frames, job.ledger.frame_count())
        overrides = collect_overrides(args)
        if args.repair:
            if overrides:
                raise UserInputError(
                    "--repair takes each attempt's settings from the job's repair schedule; "
                    "leave out the other settings, or redo without --repair."
                )
            print(
                f"repairing {len(frames)} frame(s) with the job's repair schedule; every attempt is kept in "
                f"{job.root / 'history'}",
                file=sys.stderr,
            )
            return run_in_terminal(job, args.quiet, repair_frames=frames)
        from .render import chain_followers, followers_message

        followers = chain_followers(job, frames)
        if followers:
            print(followers_message(job, frames, followers, scheduled=not args.only), file=sys.stderr)
        scheduled = schedule_redo(job, frames, overrides, followers=not args.only)
        print(
            f"re-rendering {len(frames) + len(scheduled)} frame(s); earlier attempts are kept in "
            f"{job.root / 'history'}",
            file=sys.stderr,
        )
        return run_in_terminal(job, args.quiet)


def cmd_repair(args: argparse.Namespace) -> int:
    from .job import open_job

    with open_job(Path(args.job)) as job:
        job.webui_auth = args.webui_auth or job.webui_auth
        counts = job.ledger.counts()
        if job.ledger.frame_count() == 0 or counts["done"] != job.ledger.frame_count():
            raise UserInputError(f"{job.root} has frames still to render; run `vidstyle resume {job.root}` first.")
        print(
            f"scoring {job.root} and re-rendering its suspect frames; every attempt is kept in {job.root / 'history'}",
            file=sys.stderr,
        )
        return run_in_terminal(job, args.quiet, repair=True)


def add_preview_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of an epoch preview on a video (`vidstyle preview`, `python -m trainer report --video`)."""
    from .epoch_frames import DEFAULT_COUNT, MAX_FRAMES

    parser.add_argument(
        "--frames",
        default="auto",
        metavar="auto|N,N,...",
        help="Frames to show: 'auto' picks telling ones spread over the clip (small figure, fast "
        "motion), or a list of frame numbers like 0,120,240 (default: auto).",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"How many frames 'auto' picks (1-{MAX_FRAMES}, default {DEFAULT_COUNT}).",
    )
    parser.add_argument(
        "--preset", default=None, help=f"Video preset whose settings every cell uses (default: {DEFAULT_PRESET})."
    )
    parser.add_argument(
        "--lora-weight",
        type=float,
        default=None,
        help="Weight of each epoch's LoRA (default: the run's preferred weight, else 0.8).",
    )
    parser.add_argument(
        "--webui-lora-dir",
        default=None,
        metavar="DIR",
        help="With --webui: the WebUI's Lora folder as this machine sees it; the epochs are copied "
        "there under new names for the preview and removed afterwards.",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    _add_spec_flags(parser)
    _add_webui_auth(parser)


def run_preview(args: argparse.Namespace, run_dir: Path, video: str, output: str | None = None) -> int:
    from trainer.epoch_video import preview_run_on_video

    overrides = collect_overrides(args)
    overrides["source.path"] = str(video)
    spec = load_spec(args.preset or DEFAULT_PRESET, overrides)
    printer = ProgressPrinter(args.quiet)
    try:
        result = preview_run_on_video(
            run_dir,
            spec,
            out_dir=Path(output) if output else None,
            weight=args.lora_weight,
            frames=args.frames,
            count=args.count,
            webui_lora_dir=Path(args.webui_lora_dir) if args.webui_lora_dir else None,
            webui_auth=args.webui_auth,
            on_event=printer,
        )
    finally:
        printer.close()
    print(
        f"frames {', '.join(map(str, result.frames))} x epochs {', '.join(map(str, result.epochs))} (seed "
        f"{result.seed})"
    )
    print(f"wrote {result.grid_path}")
    print(f"      {result.html_path}")
    print(f"then: python -m trainer install {run_dir} --epoch N --webui WEBUI")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    if args.lora_epochs:
        return run_preview(args, Path(args.lora_epochs), args.video, args.output)
    if args.lora_weight is not None or args.webui_lora_dir:
        raise UserInputError(
            "--lora-weight and --webui-lora-dir apply to an epoch preview; add --lora-epochs RUN, "
            "or give the LoRA with --lora NAME:WEIGHT."
        )
    return run_settings_preview(args)


def run_settings_preview(args: argparse.Namespace) -> int:
    """`vidstyle preview VIDEO` without --lora-epochs: the settings on a few frames, in one grid."""
    from .settings_preview import render_settings_preview

    overrides = collect_overrides(args)
    overrides["source.path"] = str(args.video)
    spec = load_spec(args.preset or DEFAULT_PRESET, overrides)
    output = Path(args.output) if args.output else Path.cwd() / f"{Path(args.video).stem or 'video'}-preview"
    printer = ProgressPrinter(args.quiet)
    try:
        result = render_settings_preview(
            spec,
            output,
            frames=args.frames,
            count=args.count,
            run_frames=args.run_frames,
            webui_auth=args.webui_auth,
            on_event=printer,
        )
    finally:
        printer.close()
    run = f"; {result.run_mode} run {result.run_frames[0]}-{result.run_frames[-1]}" if result.run_frames else ""
    print(f"frames {', '.join(map(str, result.frames))}{run} (seed {result.seed})")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.grid_path}")
    print(f"      {result.html_path}")
    return 0


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

    return serve_ui(host=args.host, port=args.port, output_root=Path(args.output_root), auth=args.auth)


def cmd_serve(args: argparse.Namespace) -> int:
    from .standalone import serve_api

    roots = [Path(p) for p in args.allow] if args.allow else None
    return serve_api(
        host=args.host,
        port=args.port,
        output_root=Path(args.output_root),
        auth=args.auth,
        allowed_roots=roots,
        policy_values=_policy_values(args),
        allowed_hosts=args.allow_host,
    )


def _policy_values(args: argparse.Namespace) -> dict[str, Any]:
    """ServerPolicy fields from `vidstyle serve` flags; what is not given keeps the policy's default."""
    from .policy import MIB

    values: dict[str, Any] = {
        "backends": args.allow_backend,
        "webui_urls": args.allow_webui,
        "webui_auth": args.webui_auth,
        "model_dirs": [Path(p) for p in args.models] if args.models else None,
        "max_upload_bytes": int(args.max_upload_mb * MIB) if args.max_upload_mb is not None else None,
        "max_queued_jobs": args.max_queued_jobs,
        "max_job_megapixels": args.max_job_megapixels,
        "allow_compile": args.allow_compile or None,
        "memory_modes": args.allow_memory_mode,
    }
    return {key: value for key, value in values.items() if value is not None}


def _add_webui_auth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--webui-auth",
        default=None,
        metavar="USER:PASS",
        help="user:password of WebUIs started with --api-auth (or set VIDSTYLE_WEBUI_AUTH); "
        "used for this run only, never saved in the job folder.",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidstyle", description="Stylize a video with SD img2img + LoRA + ControlNet canny."
    )
    parser.add_argument("--version", action="version", version=f"vidstyle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="Render a video into a new job folder.")
    p.add_argument("video", help="Source video file, or a folder of frames.")
    p.add_argument("-o", "--output", required=True, help="New job folder (must not exist or be empty).")
    p.add_argument(
        "--preset",
        default=None,
        help=f"Preset name ({', '.join(list_presets())}) or a .toml path (default: {DEFAULT_PRESET}).",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument(
        "--drop-intermediate",
        action="store_true",
        help="Delete src/ and control/ when the job finishes (rebuilt from the video if you redo frames).",
    )
    _add_spec_flags(p)
    _add_webui_auth(p)
    p.set_defaults(run=cmd_stylize)

    p = sub.add_parser("resume", help="Continue an interrupted job; gives the same pixels as an uninterrupted run.")
    p.add_argument("job")
    p.add_argument("-q", "--quiet", action="store_true")
    # Settings can change only while no frame is rendered (e.g. after a failed preflight).
    _add_spec_flags(p, only=REDO_FLAGS | {"--lora"})
    _add_webui_auth(p)
    p.set_defaults(run=cmd_resume)

    p = sub.add_parser("redo", help="Render chosen frames again (earlier attempts are kept), then re-encode.")
    p.add_argument("job")
    p.add_argument("--frames", required=True, help="Frames like 10-20,45 (inclusive).")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument(
        "--repair",
        action="store_true",
        help="Render each frame with every step of the job's repair schedule and keep the best-scoring attempt.",
    )
    p.add_argument(
        "--only",
        action="store_true",
        help="Re-render only these frames, not the later frames of their flow chain or keyframe segment "
        "that start from them (those then no longer match; a warning names them).",
    )
    _add_spec_flags(p, only=REDO_FLAGS | {"--lora"})
    _add_webui_auth(p)
    p.set_defaults(run=cmd_redo)

    p = sub.add_parser(
        "repair",
        help="Score a finished job and re-render its suspect frames (best attempt kept).",
        description="Suspect frames (outliers in edge fidelity or warp error) are rendered again with "
        "the job's repair schedule ([repair] in job.toml); every attempt stays in history/.",
    )
    p.add_argument("job")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_webui_auth(p)
    p.set_defaults(run=cmd_repair)

    p = sub.add_parser(
        "preview",
        help="Try settings on a few frames of a video (or, with --lora-epochs, every "
        "saved epoch of a LoRA training run) before a long job.",
        description="Write a comparison grid (PNG) and page (HTML): source | canny | result per frame, "
        "plus a short run of consecutive frames when coherence.mode is flow or keyframes; "
        "with --lora-epochs, frames x epochs with each epoch's validation loss.",
    )
    p.add_argument("video", help="Source video file, or a folder of frames.")
    p.add_argument(
        "--lora-epochs",
        default=None,
        metavar="RUN",
        help="Training run folder (python -m trainer config/train): render each saved epoch instead.",
    )
    p.add_argument(
        "--run-frames",
        type=int,
        default=None,
        metavar="N",
        help="Consecutive frames rendered as a chain, as the job's coherence mode makes them (default: 4 "
        "for flow, one keyframe interval for keyframes, none for independent; 0 turns it off).",
    )
    p.add_argument("-o", "--output", default=None, help="Folder for the grid and page (default: RUN/report).")
    add_preview_arguments(p)
    p.set_defaults(run=cmd_preview)

    p = sub.add_parser("probe", help="Show a video's size, fps, frames, rotation and audio.")
    p.add_argument("video")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("demo", help="Make a short clip and render it with the tiny built-in model.")
    p.add_argument(
        "-o", "--output", default="demo-output", help="Folder for the demo clip and job (default: demo-output)."
    )
    p.add_argument("--frames", type=int, default=24, help="Frames to render (default 24).")
    p.add_argument("--size", type=int, default=256, help="Frame size in pixels, multiple of 8 (default 256).")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=cmd_demo)

    for name, helptext, func in (
        ("ui", "Serve the Video Stylize tab standalone (gradio).", cmd_ui),
        ("serve", "Serve the /vidstyle/v1 job API standalone.", cmd_serve),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=7870 if name == "ui" else 7871)
        p.add_argument("--output-root", default="outputs/vidstyle", help="Where jobs are written.")
        p.add_argument("--auth", default=None, metavar="USER:PASS", help="Require HTTP basic auth.")
        if name == "serve":
            _add_policy_flags(p)
        p.set_defaults(run=func)
    return parser


def _add_policy_flags(p: argparse.ArgumentParser) -> None:
    """What API clients may ask for (vidstyle.policy.ServerPolicy); clients can never widen it."""
    p.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="DIR",
        help="Folder whose videos jobs may name by path; repeatable (default: the current folder).",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=None,
        metavar="NAME",
        help="Host name clients reach this server by, beyond 127.0.0.1/localhost; repeatable.",
    )
    p.add_argument(
        "--allow-backend",
        action="append",
        default=None,
        choices=["diffusers", "webui_api", "passthrough"],
        help="Backend clients may choose; repeatable (default: diffusers, webui_api, passthrough).",
    )
    p.add_argument(
        "--allow-webui",
        action="append",
        default=None,
        metavar="URL",
        help="WebUI server webui_api jobs may call; repeatable (default: none).",
    )
    _add_webui_auth(p)
    p.add_argument(
        "--models",
        action="append",
        default=None,
        metavar="DIR",
        help="Folder diffusers model names resolve in; repeatable (default: VIDSTYLE_MODELS or OUTPUT_ROOT/../models).",
    )
    p.add_argument("--max-upload-mb", type=float, default=None, help="Largest video upload (default 4096).")
    p.add_argument("--max-queued-jobs", type=int, default=None, help="Jobs queued or rendering at once (default 16).")
    p.add_argument(
        "--max-job-megapixels",
        type=float,
        default=None,
        help="Largest job: frames x width x height, in millions (default 20000).",
    )
    p.add_argument(
        "--allow-compile",
        action="store_true",
        help="Let diffusers jobs set backend.compile (torch.compile: minutes of CPU/GPU per job; default: refused).",
    )
    p.add_argument(
        "--allow-memory-mode",
        action="append",
        default=None,
        choices=["auto", "none", "model_offload", "sequential_offload"],
        help="backend.memory_mode diffusers jobs may pick; repeatable (default: all).",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
