"""Launch sd-scripts on a run folder, stream its log, show and record progress, stop it safely.

    python -m trainer train RUN [--sd-scripts DIR] [--gpus N] [--resume]

* argv is a list (never a shell): `accelerate launch --num_cpu_threads_per_process 1
  --mixed_precision MP --num_processes N [--multi_gpu] ... SCRIPT --config_file RUN/config.toml`.
  `--launcher python` (or VIDSTYLE_TRAIN_LAUNCHER=python) runs `python SCRIPT ...` directly,
  one process, without accelerate's CLI: for machines where it is missing, and for tests.
* The whole output goes to RUN/train.log; progress (step/total, epoch, average loss, it/s, ETA,
  checkpoints, samples) to RUN/progress.json (atomic) and a terminal progress bar.
* A NaN or exploding loss stops the run early; Ctrl-C stops it cleanly (SIGINT to the
  trainer's process group, then SIGTERM/SIGKILL if it does not exit).
* `--resume` continues from the newest state folder sd-scripts saved (save_state = true).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, TextIO, Tuple

from vidstyle.atomic import write_text
from vidstyle.errors import Cancelled, ModelNotFoundError, PreflightError, UserInputError, VidstyleError

from .progress import LogParser, LossGuard, Progress
from .run import Run, is_hub_id, list_images, load_run
from .sdscripts import SdScripts, check_support, find_sd_scripts

LAUNCHERS = ("accelerate", "python")
LAUNCHER_ENV = "VIDSTYLE_TRAIN_LAUNCHER"
PROGRESS_FILE = "progress.json"
LOG_FILE = "train.log"
WRITE_INTERVAL = 1.0  # seconds between progress.json writes while steps stream in


class TrainingError(VidstyleError):
    """sd-scripts failed or was stopped for a bad loss; the message says what to change."""

    exit_code = 5


# --------------------------------------------------------------------------- argv


def launcher_prefix(python: str) -> List[str]:
    """`accelerate launch` of the given Python's environment (its console script when present)."""
    bindir = Path(python).parent
    for name in ("accelerate", "accelerate.exe"):
        if (bindir / name).is_file():
            return [str(bindir / name), "launch"]
    return [python, "-m", "accelerate.commands.launch"]


def build_argv(
    script: Path,
    config: Path,
    mixed_precision: str = "no",
    gpus: int = 1,
    launcher: str = "accelerate",
    python: Optional[str] = None,
    resume: Optional[Path] = None,
    gpu_ids: Optional[str] = None,
) -> List[str]:
    """The trainer's argv. Multi-GPU goes through accelerate's own options, never a shell."""
    if gpus < 1:
        raise UserInputError(f"--gpus must be at least 1, not {gpus}.")
    if launcher not in LAUNCHERS:
        raise UserInputError(f"Unknown launcher '{launcher}'; use one of {', '.join(LAUNCHERS)}.")
    python = python or sys.executable
    tail = [str(script), "--config_file", str(config)]
    if resume is not None:
        tail += ["--resume", str(resume)]
    if launcher == "python":
        if gpus > 1:
            raise UserInputError("--launcher python runs one process; use the accelerate launcher for several GPUs.")
        return [python, *tail]
    argv = launcher_prefix(python)
    # one CPU thread per process: sd-scripts' docs launch with it; more threads only contend
    argv += ["--num_cpu_threads_per_process", "1", "--mixed_precision", mixed_precision]
    argv += ["--num_processes", str(gpus), "--num_machines", "1", "--dynamo_backend", "no"]
    if gpus > 1:
        argv.append("--multi_gpu")
    if gpu_ids:
        argv += ["--gpu_ids", gpu_ids]
    return argv + tail


def command_text(argv: Sequence[str]) -> str:
    """For reading and copy-pasting only; the launcher itself never goes through a shell."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(list(argv))


# --------------------------------------------------------------------------- run folder state


STATE_DIR = re.compile(r"-(?:(?:\d{6}|step\d{8})-)?state")


def latest_state(run: Run) -> Optional[Path]:
    """The newest state folder sd-scripts saved ({name}-000003-state, {name}-step00000100-state, {name}-state)."""
    if not run.output_dir.is_dir():
        return None
    prefix = run.output_name + "-"
    states = [
        p for p in run.output_dir.iterdir()
        if p.is_dir() and p.name.startswith(prefix) and STATE_DIR.fullmatch(p.name[len(run.output_name):])
    ]  # fmt: skip
    return max(states, key=lambda p: p.stat().st_mtime, default=None)


def trained_files(run: Run) -> List[Path]:
    if not run.output_dir.is_dir():
        return []
    return sorted(run.output_dir.glob(f"{run.output_name}*.safetensors"))


def sample_files(run: Run) -> List[str]:
    return [p.name for p in list_images(run.output_dir / "sample")]


def resume_step(state: Path) -> int:
    """The global step a state folder was saved at (sd-scripts' train_state.json)."""
    try:
        return int(json.loads((state / "train_state.json").read_text(encoding="utf-8"))["current_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def read_progress(run_dir: Path) -> Optional[Progress]:
    try:
        data = json.loads((run_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    progress = Progress()
    for key, value in data.items():
        if hasattr(progress, key):
            setattr(progress, key, value)
    progress.loss_history = [(int(s), float(v)) for s, v in progress.loss_history]
    return progress


def write_progress(run_dir: Path, progress: Progress) -> None:
    write_text(run_dir / PROGRESS_FILE, json.dumps(progress.to_dict(), indent=1, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- preflight


def preflight(run: Run) -> None:
    model = run.train.pretrained_model_name_or_path
    if not is_hub_id(model) and not Path(model).exists():
        raise ModelNotFoundError(f"The base checkpoint {model} does not exist; fix pretrained_model_name_or_path in {run.dir / 'config.toml'}.")
    for ds in run.dataset.datasets:
        for sub in ds.subsets:
            if not list_images(Path(sub.image_dir)):
                raise UserInputError(f"No images in {sub.image_dir} (named in dataset.toml); prepare the dataset again or fix image_dir.")


@dataclass
class LaunchOptions:
    sd_scripts: Optional[str] = None
    gpus: int = 1
    gpu_ids: Optional[str] = None
    launcher: Optional[str] = None
    python: Optional[str] = None
    resume: bool = False
    restart: bool = False
    loss_factor: float = 4.0
    show_bar: bool = True
    stop_grace: float = 30.0


def prepare_launch(run: Run, options: LaunchOptions) -> Tuple[SdScripts, List[str], Optional[Path]]:
    sd = find_sd_scripts(options.sd_scripts, run.family.script)
    check_support(sd, run.train, run.dataset)
    preflight(run)
    state = None
    if options.resume:
        state = latest_state(run)
        if state is None:
            raise UserInputError(
                f"Nothing to resume in {run.output_dir}: no saved state folder (set save_state = true, as the presets do); start without --resume."
            )
    elif trained_files(run) and not options.restart:
        raise UserInputError(f"{run.dir} already has trained LoRAs; continue with --resume, or start over with --restart (overwrites them).")
    launcher = options.launcher or os.environ.get(LAUNCHER_ENV) or "accelerate"
    python = options.python or (str(sd.python()) if sd.python() else sys.executable)
    argv = build_argv(
        sd.script(run.family.script), run.dir / "config.toml", run.train.mixed_precision or "no",
        options.gpus, launcher, python, state, options.gpu_ids,
    )  # fmt: skip
    return sd, argv, state


# --------------------------------------------------------------------------- process control


class Trainer:
    """One sd-scripts process in its own process group, so a stop reaches all of its workers."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict) -> None:
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        try:
            self.proc = subprocess.Popen(
                list(argv), cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
            )
        except OSError as exc:
            raise PreflightError(f"Cannot start {argv[0]}: {exc.strerror}; check that sd-scripts' Python environment is installed.") from None
        self._stopping = threading.Event()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is not None:
            return
        try:
            if os.name == "nt":
                self.proc.send_signal(signal.CTRL_BREAK_EVENT if sig == signal.SIGINT else signal.SIGTERM)  # type: ignore[attr-defined]
            else:
                os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def stop(self, grace: float) -> None:
        """Ask like Ctrl-C would; escalate to SIGTERM, then SIGKILL, if it does not exit."""
        if self._stopping.is_set():
            self.signal(signal.SIGKILL if os.name != "nt" else signal.SIGTERM)
            return
        self._stopping.set()
        self.signal(signal.SIGINT)
        threading.Thread(target=self._escalate, args=(grace,), daemon=True).start()

    def _escalate(self, grace: float) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (getattr(signal, "SIGKILL", signal.SIGTERM), 10.0)):
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                self.signal(sig)

    def read(self) -> bytes:
        assert self.proc.stdout is not None
        return os.read(self.proc.stdout.fileno(), 65536)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.signal(getattr(signal, "SIGKILL", signal.SIGTERM))
            return self.proc.wait()


# --------------------------------------------------------------------------- hints

HINTS: Sequence[Tuple["re.Pattern[str]", str]] = (
    (re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"),
     "The GPU ran out of memory: use a smaller GPU overlay (--gpu 8gb), or --set dataset.batch_size=1 --set gradient_checkpointing=true, or a lower resolution."),
    (re.compile(r"model is not found as a file or in Hugging Face|is not a valid model identifier|No such file or directory: .*\.(safetensors|ckpt)"),
     "sd-scripts cannot find the base checkpoint: check pretrained_model_name_or_path in config.toml (or run `trainer config` again with --model)."),
    (re.compile(r"extra keys not allowed|Invalid user config|voluptuous"),
     "sd-scripts rejected dataset.toml: a key is misspelled or at the wrong level (see the line above); run `trainer config` again or fix that key."),
    (re.compile(r"No data found"),
     "sd-scripts found no training images: check image_dir in dataset.toml."),
    (re.compile(r"bitsandbytes"),
     "The 8-bit optimizer needs bitsandbytes: pip install bitsandbytes in sd-scripts' environment, or --set optimizer_type=AdamW."),
    (re.compile(r"No module named"),
     "sd-scripts' requirements are missing in the Python that ran it: activate its venv and pip install -r requirements.txt (or pass --python)."),
    (re.compile(r"NCCL|ProcessGroup|torch\.distributed|DistNetworkError"),
     "Multi-GPU start-up failed: check `accelerate config` and that --gpus matches your GPUs, or train on one GPU."),
    (re.compile(r"xformers"),
     "xformers is not usable here: --set xformers=false --set sdpa=true."),
)  # fmt: skip
NAN_HINT = (
    "Lower the learning rate (unet_lr 1e-4 or less), keep network_alpha at most network_dim/2, "
    "and use bf16 (SDXL: no_half_vae = true); then start again with --restart."
)


def hint_for(lines: Sequence[str]) -> Optional[str]:
    text = "\n".join(lines)
    for pattern, hint in HINTS:
        if pattern.search(text):
            return hint
    return None


def relevant_lines(parser: LogParser, count: int = 15) -> List[str]:
    """The end of the log without progress-bar noise: the traceback and error lines."""
    lines = list(parser.lines)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback"):
            return lines[index:][-count:]
    return lines[-count:]


# --------------------------------------------------------------------------- the run


class _Display:
    """The terminal progress bar (tqdm) plus one-line notes for epochs, saves and samples."""

    def __init__(self, enabled: bool, out: TextIO) -> None:
        self.bar = None
        self.out = out
        self._last_refresh = 0.0
        # a bar redrawn with carriage returns is noise in a log file or CI output: notes only there
        if enabled and getattr(out, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="step", desc="training", file=out, dynamic_ncols=True, leave=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def event(self, event: str, progress: Progress) -> None:
        if event == "epoch":
            self.note(f"epoch {progress.epoch}/{progress.total_epochs}")
        elif event == "checkpoint" and progress.checkpoints:
            last = progress.checkpoints[-1]
            self.note(f"saved {Path(last['path']).name}" + (f" (epoch {last['epoch']})" if last["epoch"] else ""))
        elif event == "nan_latents":
            self.note("warning: sd-scripts found NaN in latents (SDXL VAE in fp16? set no_half_vae = true)")

    def update(self, progress: Progress) -> None:
        if self.bar is None:
            return
        if progress.total_steps and self.bar.total != progress.total_steps:
            self.bar.total = progress.total_steps
        self.bar.n = progress.step
        post = {}
        if progress.total_epochs:
            post["epoch"] = f"{progress.epoch}/{progress.total_epochs}"
        if progress.avr_loss is not None:
            post["loss"] = f"{progress.avr_loss:.4f}"
        if progress.phase not in ("training", "starting"):
            post["phase"] = progress.phase
        self.bar.set_postfix(post, refresh=False)
        now = time.monotonic()
        if now - self._last_refresh >= 0.2 or progress.step == progress.total_steps:
            self.bar.refresh()
            self._last_refresh = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # log lines as they happen, not when a 4 KB buffer fills
    env["PYTHONIOENCODING"] = "utf-8"  # sd-scripts prints Japanese; a cp932/ascii console must not crash it
    return env


def train(
    run_dir: Path,
    options: Optional[LaunchOptions] = None,
    out: Optional[TextIO] = None,
    on_progress: Optional[Callable[[Progress], None]] = None,
) -> Progress:
    """Run sd-scripts for RUN to the end; raise TrainingError / Cancelled when it does not finish.

    Notes and the progress bar go to `out` (default: stderr); `on_progress` gets each update."""
    options = options or LaunchOptions()
    out = out or sys.stderr
    run = load_run(run_dir)
    for warning in run.warnings:
        print(f"warning: {warning}", file=out)
    sd, argv, state = prepare_launch(run, options)
    write_text(run.dir / "command.txt", command_text(argv) + "\n")
    previous = read_progress(run.dir) if state else None
    offset = resume_step(state) if state else 0
    progress = previous or Progress(run_started_at=time.time())
    progress.state, progress.phase, progress.message, progress.returncode, progress.errors = "starting", "starting", "", None, []
    progress.model_saved, progress.avr_loss, progress.best_loss = False, None, None
    progress.loss_history = [(s, v) for s, v in progress.loss_history if s <= offset]
    parser = LogParser(progress, step_offset=offset)
    guard = LossGuard(factor=options.loss_factor)
    print(f"sd-scripts {sd.version} at {sd.root}", file=out)
    print(f"launching: {command_text(argv)}", file=out, flush=True)
    outcome = _stream(run, argv, sd, parser, guard, options, out, on_progress)
    return _finish(run, parser, outcome, out)


@dataclass
class _Outcome:
    returncode: int
    user_stop: bool
    stop_reason: Optional[str]
    started: float


def _stream(
    run: Run,
    argv: List[str],
    sd: SdScripts,
    parser: LogParser,
    guard: LossGuard,
    options: LaunchOptions,
    out: TextIO,
    on_progress: Optional[Callable[[Progress], None]],
) -> _Outcome:
    progress = parser.progress
    started = time.time()
    display = _Display(options.show_bar, out)
    parser.on_event = display.event
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    user_stop, stop_reason, last_write = False, None, 0.0
    with open(run.dir / LOG_FILE, "ab") as log:
        log.write(f"\n==== vidstyle launch {time.strftime('%Y-%m-%d %H:%M:%S')}: {command_text(argv)}\n".encode("utf-8"))
        trainer = Trainer(argv, sd.root, _child_env())
        progress.pid = trainer.proc.pid
        write_progress(run.dir, progress)
        while True:
            try:
                chunk = trainer.read()
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                events = parser.feed(decoder.decode(chunk))
                reason = guard.check(progress) if stop_reason is None and not user_stop else None
                if reason:
                    stop_reason = reason
                    display.note(f"stopping early: {reason}")
                    trainer.stop(options.stop_grace)
                now = time.time()
                if events and (now - last_write >= WRITE_INTERVAL or set(events) - {"step", "loss", "val_loss"}):
                    progress.elapsed_seconds = now - started
                    progress.samples = sample_files(run)
                    write_progress(run.dir, progress)
                    last_write = now
                    if on_progress:
                        on_progress(progress)
                display.update(progress)
            except KeyboardInterrupt:
                user_stop = True
                display.note("stopping the trainer (Ctrl-C again to kill it)...")
                trainer.stop(options.stop_grace)
        parser.feed(decoder.decode(b"", final=True))
        parser.flush()
        returncode = trainer.wait()
    display.close()
    progress.elapsed_seconds = time.time() - started
    return _Outcome(returncode, user_stop, stop_reason, started)


def _finish(run: Run, parser: LogParser, outcome: _Outcome, out: TextIO) -> Progress:
    progress = parser.progress
    progress.returncode = outcome.returncode
    progress.samples = sample_files(run)
    if outcome.returncode == 0 and not outcome.user_stop and not outcome.stop_reason and progress.model_saved:
        progress.state, progress.message = "finished", "training finished"
        write_progress(run.dir, progress)
        print(f"done: {len(progress.checkpoints)} LoRA files in {run.output_dir}; next: python -m trainer report {run.dir}", file=out)
        return progress
    if outcome.stop_reason:
        progress.state, progress.message = "failed", f"stopped early: {outcome.stop_reason}"
        write_progress(run.dir, progress)
        raise TrainingError(f"Training stopped early because {outcome.stop_reason}. {NAN_HINT}")
    if outcome.user_stop:
        progress.state, progress.message = "stopped", "stopped by the user"
        write_progress(run.dir, progress)
        resume = " --resume" if latest_state(run) else " --restart"
        raise Cancelled(f"Training stopped; continue with `python -m trainer train {run.dir}{resume}`.")
    lines = relevant_lines(parser)
    hint = hint_for(lines + progress.errors) or "See the lines above and the full log in " + str(run.dir / LOG_FILE) + "."
    progress.state = "failed"
    progress.message = f"sd-scripts exited with code {outcome.returncode}"
    write_progress(run.dir, progress)
    print(f"Last lines of {run.dir / LOG_FILE}:", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    if outcome.returncode == 0:
        raise TrainingError(f"sd-scripts ended without saving the final model. {hint}")
    raise TrainingError(f"sd-scripts failed (exit code {outcome.returncode}). {hint}")
