"""Launch sd-scripts on a run folder, stream its log, show and record progress, stop it safely.

    python -m trainer train RUN [--sd-scripts DIR] [--gpus N] [--resume]

* argv is a list (never a shell): `accelerate launch --num_cpu_threads_per_process 1
  --mixed_precision MP --num_processes N [--multi_gpu] ... SCRIPT --config_file RUN/config.toml`.
  `--launcher python` (or VIDSTYLE_TRAIN_LAUNCHER=python) runs `python SCRIPT ...` directly,
  one process, without accelerate's CLI: for machines where it is missing, and for tests.
* The whole output goes to RUN/train.log; progress (step/total, epoch, average loss, it/s, ETA,
  checkpoints, samples) to RUN/progress.json (atomic) and a terminal progress bar, and as
  `vidstyle.events.ProgressEvent`s of stage "train" to the caller's `on_event`.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vidstyle.atomic import write_text
from vidstyle.errors import Cancelled, ModelNotFoundError, PreflightError, UserInputError, VidstyleError
from vidstyle.events import EventCallback, ProgressEvent, ignore_event

from .accelerate_config import check_accelerate_config
from .progress import LogParser, LossGuard, Progress, train_event
from .run import Run, is_hub_id, list_images, load_run, update_meta
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


def launcher_prefix(python: str) -> list[str]:
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
    python: str | None = None,
    resume: Path | None = None,
    gpu_ids: str | None = None,
    accelerate_config: Path | None = None,
) -> list[str]:
    """The trainer's argv. Multi-GPU goes through accelerate's own options, never a shell.

    `accelerate_config` (checked by trainer.accelerate_config): its file decides machines and
    processes, so the options that would override it are left out.
    """
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
        if accelerate_config is not None:
            raise UserInputError(
                "--launcher python runs one process without accelerate; use the accelerate launcher "
                "with --accelerate-config."
            )
        return [python, *tail]
    argv = launcher_prefix(python)
    if accelerate_config is not None:
        if gpus > 1:
            raise UserInputError("With --accelerate-config the file sets the GPUs (num_processes); leave out --gpus.")
        argv += [
            "--config_file",
            str(accelerate_config),
            "--num_cpu_threads_per_process",
            "1",
            "--mixed_precision",
            mixed_precision,
            "--dynamo_backend",
            "no",
        ]
        return argv + (["--gpu_ids", gpu_ids] if gpu_ids else []) + tail
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


def latest_state(run: Run) -> Path | None:
    """The newest state folder sd-scripts saved ({name}-000003-state, {name}-step00000100-state, {name}-state)."""
    if not run.output_dir.is_dir():
        return None
    prefix = run.output_name + "-"
    states = [
        p for p in run.output_dir.iterdir()
        if p.is_dir() and p.name.startswith(prefix) and STATE_DIR.fullmatch(p.name[len(run.output_name):])
    ]  # fmt: skip
    return max(states, key=lambda p: p.stat().st_mtime, default=None)


def trained_files(run: Run) -> list[Path]:
    if not run.output_dir.is_dir():
        return []
    return sorted(run.output_dir.glob(f"{run.output_name}*.safetensors"))


def sample_files(run: Run) -> list[str]:
    return [p.name for p in list_images(run.output_dir / "sample")]


def resume_step(state: Path) -> int:
    """The global step a state folder was saved at (sd-scripts' train_state.json)."""
    try:
        return int(json.loads((state / "train_state.json").read_text(encoding="utf-8"))["current_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def read_progress(run_dir: Path) -> Progress | None:
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
        raise ModelNotFoundError(
            f"The base checkpoint {model} does not exist; fix pretrained_model_name_or_path in "
            f"{run.dir / 'config.toml'}."
        )
    for ds in run.dataset.datasets:
        for sub in ds.subsets:
            if not list_images(Path(sub.image_dir)):
                raise UserInputError(
                    f"No images in {sub.image_dir} (named in dataset.toml); prepare the dataset again or fix image_dir."
                )


@dataclass
class LaunchOptions:
    sd_scripts: str | None = None
    gpus: int = 1
    gpu_ids: str | None = None
    launcher: str | None = None
    python: str | None = None
    resume: bool = False
    restart: bool = False
    loss_factor: float = 4.0
    show_bar: bool = True
    stop_grace: float = 30.0
    accelerate_config: str | None = None  # multi-node: accelerate's own config file


def trainer_python(sd: SdScripts | None, option: str | None = None) -> str:
    """The Python that runs sd-scripts: --python, else the checkout's own venv, else ours."""
    if option:
        return option
    own = sd.python() if sd is not None else None
    return str(own) if own else sys.executable


def prepare_launch(run: Run, options: LaunchOptions) -> tuple[SdScripts, list[str], Path | None]:
    accelerate_config = check_accelerate_config(Path(options.accelerate_config)) if options.accelerate_config else None
    sd = find_sd_scripts(options.sd_scripts, run.family.script)
    check_support(sd, run.train, run.dataset)
    preflight(run)
    state = None
    if options.resume:
        state = latest_state(run)
        if state is None:
            raise UserInputError(
                f"Nothing to resume in {run.output_dir}: no saved state folder (set save_state = true, as the presets "
                "do); start without --resume."
            )
    elif trained_files(run) and not options.restart:
        raise UserInputError(
            f"{run.dir} already has trained LoRAs; continue with --resume, or start over with --restart (overwrites "
            "them)."
        )
    launcher = options.launcher or os.environ.get(LAUNCHER_ENV) or "accelerate"
    python = trainer_python(sd, options.python)
    argv = build_argv(
        sd.script(run.family.script), run.dir / "config.toml", run.train.mixed_precision or "no",
        options.gpus, launcher, python, state, options.gpu_ids, accelerate_config,
    )  # fmt: skip
    return sd, argv, state


# --------------------------------------------------------------------------- process control


# Run in the child when this process has SIGINT ignored: it restores the default disposition, then
# becomes the trainer (same pid, same process group).
_DEFAULT_SIGINT_THEN_EXEC = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
try:
    os.execvp(sys.argv[1], sys.argv[1:])
except OSError as exc:
    sys.stderr.write(f"Cannot start {sys.argv[1]}: {exc.strerror}\\n")
    sys.exit(127)
"""


def with_default_sigint(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> list[str]:
    """The command line to start (in `cwd`, with `env`) so that the trainer will take our SIGINT.

    A program started with SIGINT ignored (a background job of a shell script, some CI runners and
    service managers) passes that on to its children, and Python then never raises
    KeyboardInterrupt: sd-scripts would train on past an early stop or Ctrl-C until the SIGTERM
    escalation. A handled signal is reset to the default at exec but an ignored one is not, so only
    then is the trainer started through a tiny exec shim that restores the default first; the shim
    execs the program found here, so a missing one is one sentence rather than an exit code.
    """
    if os.name == "nt" or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return list(argv)
    if not sys.executable or getattr(sys, "frozen", False):
        return list(argv)  # no Python to run the shim with: a stop then comes as SIGTERM
    program = _find_program(argv[0], cwd, env.get("PATH", os.defpath))
    # -I: the trainer's environment (PYTHONPATH, PYTHONHOME...) is for the trainer, not the shim.
    return [sys.executable, "-I", "-c", _DEFAULT_SIGINT_THEN_EXEC, program, *argv[1:]]


def _find_program(program: str, cwd: Path, search_path: str) -> str:
    """The file exec in a child started in `cwd` would run for `program` (relative PATH entries
    and relative paths count from `cwd`, as they do there)."""
    if os.sep in program:
        candidates = [os.path.join(cwd, program)]  # an absolute `program` stays as it is
    else:
        candidates = [os.path.join(cwd, folder or ".", program) for folder in search_path.split(os.pathsep)]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PreflightError(_cannot_start(program, "no such executable file"))


def _cannot_start(program: str, reason: str) -> str:
    return f"Cannot start {program}: {reason}; check that sd-scripts' Python environment is installed."


class Trainer:
    """One sd-scripts process in its own process group, so a stop reaches all of its workers."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict) -> None:
        command = with_default_sigint(argv, cwd, env)
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=str(cwd),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        except OSError as exc:
            raise PreflightError(_cannot_start(command[0], exc.strerror or str(exc))) from None
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

HINTS: Sequence[tuple[re.Pattern[str], str]] = (
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory"),
        "The GPU ran out of memory: use a smaller GPU overlay (--gpu 8gb), or --set dataset.batch_size=1 --set "
        "gradient_checkpointing=true, or a lower resolution.",
    ),
    (
        re.compile(
            r"model is not found as a file or in Hugging Face|is not a valid model identifier|No such file or "
            r"directory: .*\.(safetensors|ckpt)"
        ),
        "sd-scripts cannot find the base checkpoint: check pretrained_model_name_or_path in config.toml (or run "
        "`trainer config` again with --model).",
    ),
    (
        re.compile(r"extra keys not allowed|Invalid user config|voluptuous"),
        "sd-scripts rejected dataset.toml: a key is misspelled or at the wrong level (see the line above); run "
        "`trainer config` again or fix that key.",
    ),
    (re.compile(r"No data found"), "sd-scripts found no training images: check image_dir in dataset.toml."),
    (
        re.compile(r"bitsandbytes"),
        "The 8-bit optimizer needs bitsandbytes: pip install bitsandbytes in sd-scripts' environment, or --set "
        "optimizer_type=AdamW.",
    ),
    (
        re.compile(r"No module named"),
        "sd-scripts' requirements are missing in the Python that ran it: activate its venv and pip install -r "
        "requirements.txt (or pass --python).",
    ),
    (
        re.compile(r"NCCL|ProcessGroup|torch\.distributed|DistNetworkError"),
        "Multi-GPU start-up failed: check `accelerate config` and that --gpus matches your GPUs, or train on one GPU.",
    ),
    (re.compile(r"xformers"), "xformers is not usable here: --set xformers=false --set sdpa=true."),
)
NAN_HINT = (
    "Lower the learning rate (unet_lr 1e-4 or less), keep network_alpha at most network_dim/2, "
    "and use bf16 (SDXL: no_half_vae = true); then start again with --restart."
)


def hint_for(lines: Sequence[str]) -> str | None:
    text = "\n".join(lines)
    for pattern, hint in HINTS:
        if pattern.search(text):
            return hint
    return None


def _is_launcher_wrapper(block: Sequence[str]) -> bool:
    """accelerate launch re-raises a failed child as its own CalledProcessError traceback,
    printed after the child's; that one names only the command, never the cause."""
    return any(line.startswith("subprocess.CalledProcessError") for line in block) and any(
        "accelerate" in line for line in block
    )


def relevant_lines(parser: LogParser, count: int = 15) -> list[str]:
    """The end of the log without progress-bar noise: the traceback that holds the cause."""
    lines = list(parser.lines)
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    ends = starts[1:] + [len(lines)]
    for start, end in reversed(list(zip(starts, ends, strict=False))):
        block = lines[start:end]
        if not _is_launcher_wrapper(block):
            return block[-count:]
    return lines[starts[0] :][-count:] if starts else lines[-count:]


# --------------------------------------------------------------------------- the run


class _Display:
    """The terminal progress bar (tqdm) plus one-line notes for epochs, saves and samples; every
    ProgressEvent of the run also goes to the caller's `on_event`."""

    def __init__(self, enabled: bool, out: TextIO, on_event: EventCallback = ignore_event) -> None:
        self.bar = None
        self.out = out
        self.on_event = on_event
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

    def event(self, event: ProgressEvent) -> None:
        """To the caller; "status" and "warning" messages also as a note on the terminal."""
        self.on_event(event)
        if event.kind == "status":
            self.note(event.message)
        elif event.kind == "warning":
            self.note(f"warning: {event.message}")

    def warn(self, message: str, progress: Progress) -> None:
        self.event(train_event("warning", progress, message))

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
    options: LaunchOptions | None = None,
    out: TextIO | None = None,
    on_event: EventCallback = ignore_event,
) -> Progress:
    """Run sd-scripts for RUN to the end; raise TrainingError / Cancelled when it does not finish.

    Notes and the progress bar go to `out` (default: stderr); `on_event` gets ProgressEvents of
    stage "train": "stage" at launch, "progress" per step (done/total steps, ETA, epoch, loss),
    "status" for epochs, saves and samples, "warning", and "done" when the LoRA is saved; a
    launched run that does not finish (sd-scripts failed, a bad loss, a user stop) ends with one
    "failed" event carrying the raised exception's message instead."""
    options = options or LaunchOptions()
    out = out or sys.stderr
    run = load_run(run_dir)
    for warning in run.warnings:
        print(f"warning: {warning}", file=out)
        on_event(ProgressEvent("warning", "train", message=warning))
    sd, argv, state = prepare_launch(run, options)
    write_text(run.dir / "command.txt", command_text(argv) + "\n")
    update_meta(run.dir, argv=list(argv))  # run.json must name the command that really ran
    previous = read_progress(run.dir) if state else None
    offset = resume_step(state) if state else 0
    progress = previous or Progress(run_started_at=time.time())
    progress.state, progress.phase, progress.message, progress.returncode, progress.errors = (
        "starting",
        "starting",
        "",
        None,
        [],
    )
    progress.model_saved, progress.avr_loss, progress.best_loss = False, None, None
    progress.loss_history = [(s, v) for s, v in progress.loss_history if s <= offset]
    parser = LogParser(progress, step_offset=offset)
    guard = LossGuard(factor=options.loss_factor)
    print(f"sd-scripts {sd.version} at {sd.root}", file=out)
    print(f"launching: {command_text(argv)}", file=out, flush=True)
    try:
        outcome = _stream(run, argv, sd, parser, guard, options, out, on_event)
        return _finish(run, parser, outcome, out, on_event)
    except VidstyleError as exc:
        # A launched run always ends with one closing event, as a finished one ends with "done";
        # events.py has no "cancelled" kind, so a user stop closes with "failed" too (the
        # exception, Cancelled or TrainingError, tells them apart).
        on_event(train_event("failed", progress, str(exc)))
        raise


def _empty_subset_notes(run: Run, parser: LogParser, display: _Display) -> list[str]:
    """sd-scripts v0.10.1 builds a training copy of every [[datasets]] entry
    (config_util.generate_dataset_group_by_blueprint), so DATASET/val held out whole
    (validation_split = 1.0) always logs "ignore subset ... no images found". The only quiet
    layout, a split of the training folder, would let sd-scripts' shuffle pick the validation
    images instead of prep. So train.log says, right below that line, that it is expected; any
    other empty folder is a real problem and is shown on the console."""
    path = parser.empty_subsets[-1]
    held_out = {p.resolve() for p in run.validation_only_dirs}
    if Path(path).resolve() in held_out:
        return [
            f"[vidstyle] expected: {path} holds the held-out validation images (validation_split = 1.0); "
            "sd-scripts also builds an empty training copy of that dataset, hence the line above and an empty "
            "'Dataset 1' in its summary. Nothing is wrong.\n"
        ]
    message = f"sd-scripts found no images in {path} and skips it; check image_dir in dataset.toml."
    display.warn(message, parser.progress)
    return []


def _line_end(chunk: bytes, marker: bytes) -> int:
    """Offset just past the newline that ends the line holding `marker` (or, when the marker
    came in an earlier chunk, the first newline here); -1 if this chunk ends no line."""
    found = chunk.find(marker)
    newline = chunk.find(b"\n", max(found, 0))
    return newline + 1 if newline >= 0 else -1


class _ProgressFile:
    """Writes progress.json at most every WRITE_INTERVAL while steps stream in, yet never
    leaves it staler than that: a change held back by the interval is written by a timer even
    when sd-scripts prints nothing more for a while (a slow step, sampling, saving).

    The parser mutates `progress` under `lock`; the timer writes under it too."""

    def __init__(self, run: Run, progress: Progress, started: float) -> None:
        self.lock = threading.Lock()
        self._run, self._progress, self._started = run, progress, started
        self._last = 0.0
        self._dirty = False
        self._timer: threading.Timer | None = None

    def changed(self, urgent: bool) -> None:
        """Call with `lock` held, after `progress` changed."""
        self._dirty = True
        wait = WRITE_INTERVAL - (time.time() - self._last)
        if urgent or wait <= 0:
            self._write()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self._write_late)
            self._timer.daemon = True
            self._timer.start()

    def _write_late(self) -> None:
        with self.lock:
            self._timer = None
            if self._dirty:
                self._write()

    def _write(self) -> None:
        now = time.time()
        self._progress.elapsed_seconds = now - self._started
        self._progress.samples = sample_files(self._run)
        write_progress(self._run.dir, self._progress)
        self._last, self._dirty = now, False

    def close(self) -> None:
        """No late write after this: the caller writes the final state itself."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._dirty = False


@dataclass
class _Outcome:
    returncode: int
    user_stop: bool
    stop_reason: str | None
    started: float


def _stream(
    run: Run,
    argv: list[str],
    sd: SdScripts,
    parser: LogParser,
    guard: LossGuard,
    options: LaunchOptions,
    out: TextIO,
    on_event: EventCallback,
) -> _Outcome:
    progress = parser.progress
    started = time.time()
    display = _Display(options.show_bar, out, on_event)
    parser.on_event = display.event
    launching = f"launching sd-scripts {sd.version}"
    display.event(ProgressEvent("stage", "train", parser.step_offset, progress.total_steps or 0, message=launching))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    user_stop, stop_reason = False, None
    log_notes: list[str] = []
    progress_file = _ProgressFile(run, progress, started)
    with open(run.dir / LOG_FILE, "ab") as log:
        log.write(f"\n==== vidstyle launch {time.strftime('%Y-%m-%d %H:%M:%S')}: {command_text(argv)}\n".encode())
        trainer = Trainer(argv, sd.root, _child_env())
        with progress_file.lock:
            progress.pid = trainer.proc.pid
            progress_file.changed(urgent=True)
        while True:
            try:
                chunk = trainer.read()
                if not chunk:
                    break
                with progress_file.lock:
                    events = parser.feed(decoder.decode(chunk))
                    reason = guard.check(progress) if stop_reason is None and not user_stop else None
                    if events:
                        progress_file.changed(urgent=bool(set(events) - {"step", "loss", "val_loss"}))
                if "empty_subset" in events:
                    log_notes += _empty_subset_notes(run, parser, display)
                cut = _line_end(chunk, b"no images found") if log_notes else -1
                if cut >= 0:  # our note goes right below the line it explains, never inside a line
                    log.write(chunk[:cut] + "".join(log_notes).encode("utf-8") + chunk[cut:])
                    log_notes = []
                else:
                    log.write(chunk)
                log.flush()
                if reason:
                    stop_reason = reason
                    display.warn(f"stopping early: {reason}", progress)
                    trainer.stop(options.stop_grace)
                display.update(progress)
            except KeyboardInterrupt:
                user_stop = True
                display.note("stopping the trainer (Ctrl-C again to kill it)...")
                trainer.stop(options.stop_grace)
        with progress_file.lock:
            parser.feed(decoder.decode(b"", final=True))
            parser.flush()
        log.write("".join(log_notes).encode("utf-8"))
        progress_file.close()
        returncode = trainer.wait()
    display.close()
    progress.elapsed_seconds = time.time() - started
    return _Outcome(returncode, user_stop, stop_reason, started)


def _finish(
    run: Run, parser: LogParser, outcome: _Outcome, out: TextIO, on_event: EventCallback = ignore_event
) -> Progress:
    progress = parser.progress
    progress.returncode = outcome.returncode
    progress.samples = sample_files(run)
    if outcome.returncode == 0 and not outcome.user_stop and not outcome.stop_reason and progress.model_saved:
        progress.state, progress.message = "finished", "training finished"
        write_progress(run.dir, progress)
        on_event(train_event("done", progress, f"{len(progress.checkpoints)} LoRA files in {run.output_dir}"))
        print(
            f"done: {len(progress.checkpoints)} LoRA files in {run.output_dir}; next: python -m trainer report "
            f"{run.dir}",
            file=out,
        )
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
    hint = (
        hint_for(lines + progress.errors) or "See the lines above and the full log in " + str(run.dir / LOG_FILE) + "."
    )
    progress.state = "failed"
    progress.message = f"sd-scripts exited with code {outcome.returncode}"
    write_progress(run.dir, progress)
    print(f"Last lines of {run.dir / LOG_FILE}:", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    if outcome.returncode == 0:
        raise TrainingError(f"sd-scripts ended without saving the final model. {hint}")
    raise TrainingError(f"sd-scripts failed (exit code {outcome.returncode}). {hint}")
