"""Find a kohya sd-scripts checkout, tell what it supports, and set one up.

Where: `--sd-scripts DIR`, else $VIDSTYLE_SD_SCRIPTS (or $SD_SCRIPTS), else the folder that
`python -m trainer setup-sd-scripts` clones into (~/.cache/vidstyle/sd-scripts).

What it supports: sd-scripts keeps no version in its files (library/__init__.py is empty), so
we read `git describe --tags` for display and probe the source for what the config uses: every
config.toml key must be an `add_argument("--KEY"` of the scripts train_network.py builds its
parser from, every dataset.toml key must appear in library/config_util.py, and a few value
features have their own probe (a fractional lr_warmup_steps needs `int_or_float`, v0.9+).
This works for git clones and zip downloads alike.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidstyle.errors import PreflightError, UserInputError

from .config_schema import DatasetConfig, TrainArgs

REPO_URL = "https://github.com/kohya-ss/sd-scripts.git"
PINNED_RELEASE = "v0.10.1"  # first release with validation loss is v0.10.0; v0.10.1 fixes it
ENV_VARS = ("VIDSTYLE_SD_SCRIPTS", "SD_SCRIPTS")
DEFAULT_DIR = Path.home() / ".cache" / "vidstyle" / "sd-scripts"
# The modules whose add_*_arguments() train_network.setup_parser() calls (plus SDXL's).
PARSER_SOURCES = (
    "train_network.py", "sdxl_train_network.py", "library/train_util.py", "library/config_util.py",
    "library/custom_train_functions.py", "library/sai_model_spec.py", "library/utils.py",
    "library/deepspeed_utils.py", "library/sdxl_train_util.py",
)  # fmt: skip
ARGUMENT = re.compile(r"add_argument\(\s*[\"']--([A-Za-z0-9_]+)[\"']")
# Keys that came with a known release, for a helpful message when a checkout is older.
ADDED_IN = {
    "validation_split": "v0.10.0",
    "validation_seed": "v0.10.0",
    "validate_every_n_epochs": "v0.10.0",
    "validate_every_n_steps": "v0.10.0",
    "max_validation_steps": "v0.10.0",
    "lr_scheduler_min_lr_ratio": "v0.9.0",
    "resize_interpolation": "v0.10.0",
}
MANUAL_STEPS = (
    f"git clone --branch {PINNED_RELEASE} {REPO_URL} DIR; cd DIR; python -m venv venv; "
    "activate it; install PyTorch for your GPU (pytorch.org), then `pip install -r requirements.txt` "
    "and `accelerate config`; finally pass --sd-scripts DIR or set VIDSTYLE_SD_SCRIPTS=DIR"
)


@dataclass
class SdScripts:
    root: Path
    version: str
    arguments: frozenset
    dataset_source: str
    warmup_fraction: bool

    def script(self, name: str) -> Path:
        return self.root / name

    def python(self) -> Path | None:
        """The checkout's own venv (sd-scripts' README creates `venv` inside it), if any."""
        for candidate in (self.root / "venv" / "bin" / "python", self.root / "venv" / "Scripts" / "python.exe"):
            if candidate.is_file():
                return candidate
        return None


def candidate_dirs(option: str | None) -> list[Path]:
    if option:
        return [Path(option).expanduser()]
    for name in ENV_VARS:
        value = os.environ.get(name)
        if value:
            return [Path(value).expanduser()]
    return [DEFAULT_DIR]


def find_sd_scripts(option: str | None = None, script: str = "train_network.py") -> SdScripts:
    """Locate sd-scripts or raise PreflightError with the ways to get it."""
    root = candidate_dirs(option)[0]
    if not (root / script).is_file():
        where = f"{root}" if option or any(os.environ.get(n) for n in ENV_VARS) else f"{root} (the default location)"
        raise PreflightError(
            f"kohya sd-scripts was not found at {where}; run `python -m trainer setup-sd-scripts` "
            f"or, by hand: {MANUAL_STEPS}."
        )
    return inspect_sd_scripts(root.resolve())


def inspect_sd_scripts(root: Path) -> SdScripts:
    arguments = set()
    for relative in PARSER_SOURCES:
        arguments |= set(ARGUMENT.findall(_read(root / relative)))
    util = _read(root / "library" / "train_util.py")
    return SdScripts(
        root=root,
        version=git_version(root),
        arguments=frozenset(arguments),
        dataset_source=_read(root / "library" / "config_util.py"),
        warmup_fraction="def int_or_float" in util,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def git_version(root: Path) -> str:
    git = shutil.which("git")
    if not git or not (root / ".git").exists():
        return "unknown (not a git checkout)"
    try:
        done = subprocess.run(
            [git, "-C", str(root), "describe", "--tags", "--always"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def missing_features(sd: SdScripts, train: TrainArgs, dataset: DatasetConfig) -> list[str]:
    """Keys and features the config uses that this checkout does not have (empty = all fine)."""
    missing = [key for key in train.to_toml_dict() if key not in sd.arguments]
    for key in sorted(_dataset_keys(dataset)):
        if not re.search(rf"[\"']{re.escape(key)}[\"']", sd.dataset_source):
            missing.append(key)
    if isinstance(train.lr_warmup_steps, float) and not sd.warmup_fraction:
        missing.append("lr_warmup_steps as a fraction")
    return missing


def _dataset_keys(dataset: DatasetConfig) -> Iterable[str]:
    data = dataset.to_toml_dict()
    keys = set(data.get("general", {}))
    for ds in data["datasets"]:
        keys |= {k for k in ds if k != "subsets"}
        for sub in ds["subsets"]:
            keys |= set(sub)
    return keys


def check_support(sd: SdScripts, train: TrainArgs, dataset: DatasetConfig) -> None:
    missing = missing_features(sd, train, dataset)
    if not missing:
        return
    releases = sorted({ADDED_IN[k] for k in missing if k in ADDED_IN})
    need = f" (added in {', '.join(releases)})" if releases else ""
    raise PreflightError(
        f"sd-scripts at {sd.root} (version {sd.version}) does not support {', '.join(missing)}{need}; "
        f"update it (`git -C {sd.root} fetch --tags && git -C {sd.root} checkout {PINNED_RELEASE}`) or remove those "
        "settings."
    )


def clone_command(target: Path, release: str = PINNED_RELEASE) -> list[str]:
    return ["git", "clone", "--depth", "1", "--branch", release, REPO_URL, str(target)]


def setup_sd_scripts(target: str | None = None, release: str = PINNED_RELEASE) -> Path:
    """Clone the pinned release; installing its Python requirements stays a manual step, since
    the right PyTorch build depends on the GPU and its driver."""
    root = Path(target).expanduser() if target else DEFAULT_DIR
    if (root / "train_network.py").is_file():
        return root
    if root.exists() and any(root.iterdir()):
        raise UserInputError(f"{root} exists and is not an sd-scripts checkout; choose an empty folder with --dir.")
    if not shutil.which("git"):
        raise PreflightError(
            f"git is not installed, so sd-scripts cannot be cloned; install git, or by hand: {MANUAL_STEPS}."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(clone_command(root, release), capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PreflightError(
            f"Cloning sd-scripts failed ({exc}); without network access do it by hand: {MANUAL_STEPS}."
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise PreflightError(
            f"Cloning sd-scripts failed ({reason}); without network access do it by hand: {MANUAL_STEPS}."
        )
    return root


def next_steps(root: Path) -> Sequence[str]:
    return (
        f"cd {root}",
        "python -m venv venv   (then activate it)",
        "install PyTorch for your GPU from https://pytorch.org, then: pip install -r requirements.txt",
        "accelerate config     (answer for your GPUs; the launcher passes the important options itself)",
        f"python -m trainer train RUN --sd-scripts {root}   (or set VIDSTYLE_SD_SCRIPTS={root})",
    )
