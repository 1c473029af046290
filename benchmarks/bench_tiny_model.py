"""Print how long the tiny random-weight model takes per frame through DiffusersBackend (CPU).

The tiny model keeps SD's cost shape (8x VAE, 8x ControlNet hint embedding), so this is
the per-frame cost the tests and demo pay, and a floor for the backend's own overhead.

    .venv/bin/python benchmarks/bench_tiny_model.py [--size 512] [--steps 4] [--frames 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="frame width and height in pixels")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps")
    parser.add_argument("--denoise", type=float, default=1.0, help="1.0 runs all steps (img2img runs steps*denoise)")
    parser.add_argument("--frames", type=int, default=5, help="timed frames (after one warm-up frame)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--no-controlnet", action="store_true", help="plain img2img instead of ControlNet img2img")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from vidstyle.backends.base import Img2ImgRequest
    from vidstyle.backends.diffusers import DiffusersBackend
    from vidstyle.spec import build_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = build_spec(
        {
            "model": {"checkpoint": "tiny"},
            "controlnet": {"model": "tiny", "enabled": not args.no_controlnet},
            "size": {"width": args.size, "height": args.size},
            "sampling": {"steps": args.steps, "denoise": args.denoise, "seed": 1},
            "backend": {"device": "cpu"},
        }
    )
    backend = DiffusersBackend(spec)
    started = time.perf_counter()
    backend.preflight()
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))
    edges = Image.fromarray(((rng.random((args.size, args.size)) > 0.9) * 255).astype(np.uint8)).convert("RGB")

    def request(index: int) -> Img2ImgRequest:
        return Img2ImgRequest(
            frame_index=index,
            init_image=init,
            control_image=edges,
            prompt="1girl, anime style",
            negative_prompt="lowres",
            checkpoint="tiny",
            loras=[],
            controlnet=spec.controlnet,
            width=args.size,
            height=args.size,
            denoise=args.denoise,
            steps=args.steps,
            cfg_scale=7.0,
            sampler="Euler a",
            scheduler="Automatic",
            seed=index,
        )

    backend.img2img(request(0))  # warm-up: first-call allocations and kernel selection
    times = []
    for index in range(1, args.frames + 1):
        started = time.perf_counter()
        backend.img2img(request(index))
        times.append(time.perf_counter() - started)
    backend.close()
    steps_run = int(args.steps * args.denoise)
    mode = "img2img" if args.no_controlnet else "ControlNet img2img"
    print(
        f"tiny model, {mode}, {args.size}x{args.size}, {steps_run} of {args.steps} steps, CFG on, "
        f"{torch.get_num_threads()} torch threads, load {load_s:.2f} s"
    )
    print(
        f"ms per frame: median {statistics.median(times) * 1000:.0f}, min {min(times) * 1000:.0f}, "
        f"max {max(times) * 1000:.0f} over {len(times)} frames"
    )


if __name__ == "__main__":
    main()
