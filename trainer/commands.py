"""`python -m trainer config | train | report | install | setup-sd-scripts`: argparse glue only.

Each command parses its options and calls one engine function; the engine modules hold the
logic (run.py, launch.py, report.py, install.py, sdscripts.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from vidstyle.errors import run_command

from .presets import GPU_SIZES, apply_override, list_presets, load_stack


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_config(sub)
    _register_train(sub)
    _register_report(sub)
    _register_install(sub)
    _register_setup(sub)


# --------------------------------------------------------------------------- config


def _register_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="write a run folder (dataset.toml, config.toml, sample prompts) from presets",
        description="Write RUN/dataset.toml, RUN/config.toml, RUN/sample_prompts.txt and RUN/command.txt "
        "from a base preset, optional overlays and --set overrides. Presets: " + ", ".join(list_presets()) + ".",
    )
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="P",
        help="base preset first, then overlays (repeatable), or a .toml path",
    )
    p.add_argument("--gpu", choices=GPU_SIZES, help="add the gpu-<size> overlay (same as --preset gpu-<size>)")
    p.add_argument(
        "--dataset", required=True, type=Path, help="prepared dataset folder (DATASET/img/N_name, DATASET/val)"
    )
    p.add_argument(
        "--model", required=True, help="base checkpoint: .safetensors/.ckpt, diffusers folder or Hugging Face id"
    )
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override: KEY (config.toml), dataset.KEY, subset.KEY, samples.KEY or install.KEY; values are TOML (1e-4, "
        "true, 'text')",
    )
    p.add_argument(
        "--validation",
        default="auto",
        choices=("auto", "heldout", "split", "off"),
        help="validation loss from DATASET/val (heldout), from a split of the training images, or off; auto = heldout "
        "when val/ has images",
    )
    p.add_argument(
        "--validation-split", type=float, default=0.1, help="fraction held out with --validation split (default 0.1)"
    )
    p.add_argument("--name", help="LoRA file name (default: the trigger word)")
    p.add_argument("--sd-scripts", help="sd-scripts folder, for the exact command in command.txt")
    p.add_argument("--force", action="store_true", help="rewrite the configs of a run that already has trained LoRAs")
    p.set_defaults(run=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from vidstyle.errors import PreflightError, UserInputError
    from vidstyle.overrides import parse_value, split_assignment

    from .launch import build_argv, command_text, trainer_python
    from .run import plan_run, write_run
    from .sdscripts import find_sd_scripts

    stack = load_stack(args.preset, args.gpu)
    for text in args.overrides:
        key, value = split_assignment(text)
        apply_override(stack, key, parse_value(value, strict=True))
    if list((args.out / "output").glob("*.safetensors")) and not args.force:
        raise UserInputError(
            f"{args.out} already has trained LoRAs; choose another --out, or add --force to rewrite its configs."
        )
    plan = plan_run(stack, args.dataset, args.model, args.out, args.validation, args.validation_split, args.name)
    try:
        sd = find_sd_scripts(args.sd_scripts, plan.family.script)
        script, python, note = sd.script(plan.family.script), trainer_python(sd), ""
    except PreflightError:
        script, python = Path("<sd-scripts>") / plan.family.script, sys.executable
        note = (
            "\n# sd-scripts was not found yet: `python -m trainer train` rewrites this file with the exact command "
            "it runs."
        )
    argv = build_argv(script, args.out.resolve() / "config.toml", plan.train.mixed_precision or "no", python=python)
    write_run(plan, args.out, command_text(argv) + note, argv)
    _print_plan(plan, args.out)
    return 0


def _print_plan(plan: object, out_dir: Path) -> None:
    from .run import RunPlan

    assert isinstance(plan, RunPlan)
    images = sum(c.images * c.repeats for c in plan.info.concepts)
    batch = plan.dataset.general.batch_size or 1
    epochs = plan.train.max_train_epochs or 0
    steps = math.ceil(images / batch) * epochs if epochs else plan.train.max_train_steps
    print(f"wrote {out_dir}/dataset.toml, config.toml, sample_prompts.txt, command.txt")
    print(f"  {plan.family.name} ({plan.family.script}), presets: {', '.join(plan.presets)}")
    print(
        f"  trigger '{plan.info.trigger}', {images} images x repeats, batch {batch}, {epochs} epochs = about {steps} "
        "steps"
    )
    print(
        f"  validation: {plan.validation} ({plan.info.val_images} held-out images)"
        if plan.validation == "heldout"
        else f"  validation: {plan.validation}"
    )
    print(f"  {len(plan.prompts)} sample prompts per epoch")
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"next: python -m trainer train {out_dir}")


# --------------------------------------------------------------------------- train


def _register_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train", help="run sd-scripts on a run folder with live progress", description="Launch sd-scripts for RUN."
    )
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument(
        "--sd-scripts", help="sd-scripts folder (default: $VIDSTYLE_SD_SCRIPTS, then ~/.cache/vidstyle/sd-scripts)"
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs to train on (accelerate --multi_gpu when > 1)")
    p.add_argument("--gpu-ids", help="which GPUs, e.g. 0,1 (accelerate --gpu_ids)")
    p.add_argument(
        "--accelerate-config",
        metavar="FILE",
        help="accelerate config file for several machines (from `accelerate config`; each machine its own "
        "machine_rank), passed to accelerate launch --config_file after a check",
    )
    p.add_argument(
        "--launcher",
        choices=("accelerate", "python"),
        help="accelerate (default) or python: run the script directly, one process (also $VIDSTYLE_TRAIN_LAUNCHER)",
    )
    p.add_argument("--python", help="Python of sd-scripts' environment (default: DIR/venv, else this Python)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from the newest saved state")
    group.add_argument(
        "--restart", action="store_true", help="start over although trained LoRAs exist (overwrites them)"
    )
    p.add_argument(
        "--loss-factor",
        type=float,
        default=4.0,
        help="stop when the average loss exceeds this multiple of its best (0 = only NaN)",
    )
    p.add_argument("--no-progress-bar", action="store_true", help="print notes only (for logs)")
    p.set_defaults(run=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .launch import LaunchOptions, train

    options = LaunchOptions(
        sd_scripts=args.sd_scripts, gpus=args.gpus, gpu_ids=args.gpu_ids, launcher=args.launcher, python=args.python,
        resume=args.resume, restart=args.restart, loss_factor=args.loss_factor, show_bar=not args.no_progress_bar,
        accelerate_config=args.accelerate_config,
    )  # fmt: skip
    train(args.run_dir, options)
    return 0


# --------------------------------------------------------------------------- report


def _register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="loss curves, epoch x prompt sample grid and a per-epoch summary",
        description="Write RUN/report/: loss.png, grid.png, summary.md/.json and index.html.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--thumb", type=int, default=192, help="grid cell size in pixels")
    p.add_argument(
        "--video",
        help="also render every saved epoch on telling frames of this video "
        "(RUN/report/video-NAME.png/.html; the same as `vidstyle preview VIDEO --lora-epochs RUN`)",
    )
    from vidstyle.cli import add_preview_arguments

    add_preview_arguments(p)
    p.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    report = build_report(args.run_dir, thumb=args.thumb)
    print(report.summary_text())
    print(f"wrote {report.dir}/index.html, loss.png, grid.png, summary.md, summary.json")
    if args.video:
        from vidstyle.cli import run_preview

        return run_preview(args, args.run_dir, args.video)
    return 0


# --------------------------------------------------------------------------- install


def _register_install(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "install",
        help="copy a chosen epoch's LoRA into the WebUI with its card files",
        description="Copy the LoRA of --epoch into WEBUI/models/Lora with NAME.preview.png and NAME.json.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN")
    p.add_argument("--epoch", required=True, help="epoch number, 'last', or 'best' (lowest validation loss)")
    p.add_argument("--webui", type=Path, help="WebUI folder (its models/Lora receives the files)")
    p.add_argument(
        "--lora-dir",
        type=Path,
        help="the WebUI's Lora folder when it is not WEBUI/models/Lora (--lora-dir of the WebUI)",
    )
    p.add_argument("--name", help="file name in the WebUI (default: the run's output_name)")
    p.add_argument("--weight", type=float, help="preferred weight on the card (default: the preset's)")
    p.add_argument("--force", action="store_true", help="replace files of the same name")
    p.set_defaults(run=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    from .install import install_lora

    installed = install_lora(
        args.run_dir,
        args.epoch,
        webui=args.webui,
        lora_dir=args.lora_dir,
        name=args.name,
        weight=args.weight,
        force=args.force,
    )
    for path in installed:
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- setup


def _register_setup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .sdscripts import DEFAULT_DIR, PINNED_RELEASE

    p = sub.add_parser(
        "setup-sd-scripts",
        help=f"clone kohya sd-scripts {PINNED_RELEASE} (needs git and network)",
        description=f"Clone kohya sd-scripts {PINNED_RELEASE} into --dir (default {DEFAULT_DIR}) and print the "
        "remaining steps.",
    )
    p.add_argument("--dir", help="where to clone")
    p.add_argument("--release", default=PINNED_RELEASE, help="git tag to check out")
    p.set_defaults(run=cmd_setup)


def cmd_setup(args: argparse.Namespace) -> int:
    from .sdscripts import next_steps, setup_sd_scripts

    root = setup_sd_scripts(args.dir, args.release)
    print(f"sd-scripts is in {root}. Next steps:")
    for step in next_steps(root):
        print(f"  {step}")
    return 0


# --------------------------------------------------------------------------- in-process entry


def main(argv: list[str] | None = None) -> int:
    """These commands without `trainer.__main__` (which also loads `prep`): for embedding and tests."""
    parser = argparse.ArgumentParser(prog="python -m trainer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(lambda: args.run(args))
