"""`vidstyle demo`: the whole loop on a fresh machine, with no media and no model download.

It makes a short clip (a dancing figure, a panning camera, a sound track), renders it with
the tiny random-weight model and says where everything is. A random-weight model does not
stylize; the demo proves the plumbing, and the closing text says how to use real models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import UserInputError
from .job import create_job
from .spec import load_spec
from .synthetic import make_clip
from .terminal import run_in_terminal

REAL_MODELS_HINT = """\
Note: the demo uses a tiny random-weight model, so the frames come out as coloured noise
shaped by the canny edges: it shows the pipeline, not a style. To stylize for real:

  vidstyle stylize dance.mp4 -o zhongli-dance --preset anime-canny-sd15 \\
      --model /path/to/anything-v5.safetensors \\
      --controlnet-model /path/to/control_v11p_sd15_canny.safetensors \\
      --lora /path/to/zhongli.safetensors:0.8 --prompt "zhongli, 1boy, anime"

or render on a running WebUI (started with --api and sd-webui-controlnet installed):

  vidstyle stylize dance.mp4 -o zhongli-dance --webui http://127.0.0.1:7860 \\
      --model "anything-v5" --controlnet-model control_v11p_sd15_canny --lora zhongli:0.8
"""


def _free_job_dir(root: Path) -> Path:
    candidate = root / "job"
    n = 2
    while candidate.exists():
        candidate = root / f"job-{n}"
        n += 1
    return candidate


def run_demo(output: Path, quiet: bool = False, frames: int = 24, size: int = 256) -> int:
    if frames < 1:
        raise UserInputError("--frames must be at least 1.")
    if size % 8 or not 64 <= size <= 1024:
        raise UserInputError("--size must be a multiple of 8 between 64 and 1024.")
    output.mkdir(parents=True, exist_ok=True)
    clip = output / "demo_clip.mp4"
    if not clip.exists():
        make_clip(clip, seconds=max(1.0, frames / 30 + 0.5), fps=30, size=(size * 4 // 3 // 8 * 8, size))
    print(f"demo clip: {clip}", file=sys.stderr)
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "source.end_frame": frames,
            "size.width": size,
            "size.height": size,
            "model.checkpoint": "tiny",
            "controlnet.model": "tiny",
            "sampling.steps": 8,
            "sampling.seed": 1234,
            "backend.kind": "diffusers",
            "backend.device": "cpu",
        },
    )
    job = create_job(spec, _free_job_dir(output))
    with job:
        status = run_in_terminal(job, quiet)
    print()
    print(REAL_MODELS_HINT)
    return status
