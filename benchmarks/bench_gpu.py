"""The standalone diffusers backend on real SD1.5/SDXL shapes, per memory mode and attention choice.

No downloads: the UNet, VAE, text encoder(s) and ControlNet are built in code with the real
architectures and random weights (vidstyle.sd_architectures), written once to --work-dir as
diffusers folders, and loaded by the real backend like any checkpoint. Each configuration
renders N frames of the project's own synthetic clip through the real job engine (prepare,
frame loop, ledger, PNG writes) and prints one Markdown row:

* s/frame: time inside DiffusersBackend.img2img per frame (model load excluded);
* peak VRAM: torch.cuda.max_memory_allocated during the render (n/a on CPU);
* engine overhead: the share of the render's wall time spent outside the backend;
* frames/s x2: the same job with two backends rendering two frames at once (2x the weights);
* compile s: torch.compile time, reported on its own (--compile), never inside s/frame.

On a GPU:  python benchmarks/bench_gpu.py                       (sd15 + sdxl, 512 and 1024, 20 steps)
On a CPU:  python benchmarks/bench_gpu.py --arch sd15 --device cpu --steps 1 --size 256   (slow)
CI smoke:  python benchmarks/bench_gpu.py --arch tiny --device cpu --steps 1 --size 64 --frames 2
"""

from __future__ import annotations

import argparse
import importlib.util
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import make_source

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.diffusers import DiffusersBackend
from vidstyle.errors import VidstyleError
from vidstyle.job import create_job, prepare
from vidstyle.render import render_pending
from vidstyle.spec import JobSpec, load_spec
from vidstyle.tiny_models import cache_root

MODES = ("none", "model_offload", "sequential_offload")
COLUMNS = (
    "arch",
    "size",
    "memory mode",
    "attention",
    "s/frame",
    "peak VRAM",
    "engine overhead",
    "frames/s x2",
    "compile s",
)


class TimedBackend:
    """The diffusers backend, with the time spent inside img2img added up."""

    name = "diffusers"

    def __init__(self, engines: list[DiffusersBackend]) -> None:
        self.engines = engines
        self.concurrency = len(engines)
        self.seconds = 0.0
        self._free: queue.Queue[DiffusersBackend] = queue.Queue()
        for engine in engines:
            self._free.put(engine)

    def preflight(self) -> None:
        for engine in self.engines:
            engine.preflight()

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        engine = self._free.get()  # two frames in flight means two engines, one frame each
        started = time.perf_counter()
        try:
            return engine.img2img(request)
        finally:
            self.seconds += time.perf_counter() - started
            self._free.put(engine)

    def interrupt(self) -> None:
        for engine in self.engines:
            engine.interrupt()

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def models_for(arch: str, work_dir: Path) -> dict[str, str]:
    if arch == "tiny":
        return {"model.checkpoint": "tiny", "controlnet.model": "tiny"}
    import torch

    from vidstyle.sd_architectures import write_random_pipeline

    folder = write_random_pipeline(arch, work_dir / f"random-{arch}", dtype=torch.float16)
    return {"model.checkpoint": str(folder), "controlnet.model": str(folder / "controlnet")}


def job_spec(
    args: argparse.Namespace, clip: Path, models: dict[str, str], size: int, mode: str, attention: str
) -> JobSpec:
    denoise = 0.75 if int(args.steps * 0.75) >= 1 else 1.0  # img2img runs int(steps * denoise) steps
    return load_spec(
        overrides={
            "source.path": str(clip),
            "source.end_frame": args.frames,
            "size.width": size,
            "size.height": size,
            "prompt": "1girl, anime style",
            "sampling.steps": args.steps,
            "sampling.denoise": denoise,
            "sampling.seed": 1,
            "backend.kind": "diffusers",
            "backend.device": args.device,
            "backend.memory_mode": mode,
            "backend.attention": attention,
            "backend.compile": args.compile,
            **models,
        }
    )


def render(spec: JobSpec, root: Path, engines: int) -> dict[str, Any]:
    """Render the job once with `engines` backends in parallel; timings of the frame loop only."""
    import torch

    cuda = torch.cuda.is_available() and spec.backend.device != "cpu"
    with create_job(spec, root) as job:
        prepare(job)
        backend = TimedBackend([DiffusersBackend(job.spec) for _ in range(engines)])
        try:
            backend.preflight()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            summary = render_pending(job, backend)
            wall = time.perf_counter() - started
            if summary.failed:
                raise VidstyleError(next(iter(summary.failed.values())))
            compile_s = backend.engines[0].compile_seconds
            return {
                "frames": summary.rendered,
                "wall": wall,
                "backend": backend.seconds,
                "peak": torch.cuda.max_memory_allocated() if cuda else None,
                "compile": compile_s,
            }
        finally:
            backend.close()


def run_one(
    args: argparse.Namespace,
    clip: Path,
    models: dict[str, str],
    arch: str,
    size: int,
    mode: str,
    attention: str,
    scratch: Path,
) -> list[str]:
    spec = job_spec(args, clip, models, size, mode, attention)
    tag = f"{arch}-{size}-{mode}-{attention}"
    try:
        single = render(spec, scratch / f"{tag}-1", engines=1)
    except (VidstyleError, RuntimeError) as exc:  # an OOM is a result, not a crash
        return [arch, f"{size}²", mode, attention, f"failed: {str(exc)[:60]}", "", "", "", ""]
    try:
        double = render(spec, scratch / f"{tag}-2", engines=2)
        pair = f"{double['frames'] / double['wall']:.2f}"
    except (VidstyleError, RuntimeError) as exc:
        pair = f"failed: {str(exc)[:40]}"
    per_frame = single["backend"] / max(single["frames"], 1)
    overhead = max(0.0, 1 - single["backend"] / single["wall"])
    peak = f"{single['peak'] / 2**30:.2f} GB" if single["peak"] is not None else "n/a (CPU)"
    compile_s = f"{single['compile']:.1f}" if single["compile"] is not None else "-"
    return [arch, f"{size}²", mode, attention, f"{per_frame:.2f}", peak, f"{overhead:.1%}", pair, compile_s]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch",
        action="append",
        choices=("sd15", "sdxl", "tiny"),
        help="Architectures to run (repeatable; default: sd15 and sdxl).",
    )
    parser.add_argument("--size", action="append", type=int, help="Frame sizes (repeatable; default: 512 and 1024).")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--mode", action="append", choices=MODES, help="Memory modes (default: all).")
    parser.add_argument("--compile", action="store_true", help="torch.compile UNet and ControlNet as well.")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=cache_root() / "bench-gpu",
        help="Where the random-weight models are written (reused across runs).",
    )
    args = parser.parse_args(argv)
    # xformers is only a choice where it is installed (and it has no CPU kernels)
    attentions = ["sdpa"] + (["xformers"] if importlib.util.find_spec("xformers") and args.device != "cpu" else [])
    rows: list[list[str]] = []
    args.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        scratch = Path(tmp)
        for arch in args.arch or ["sd15", "sdxl"]:
            models = models_for(arch, args.work_dir)
            for size in args.size or [512, 1024]:
                clip = make_source(scratch / f"clip-{size}.mp4", args.frames, size=size)
                for mode in args.mode or MODES:
                    for attention in attentions:
                        rows.append(run_one(args, clip, models, arch, size, mode, attention, scratch))
                        print("  done:", " ".join(rows[-1][:4]), file=sys.stderr, flush=True)
    print(
        f"steps {args.steps}, {args.frames} frames, device {args.device}, "
        f"{'with' if args.compile else 'without'} torch.compile\n"
    )
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
