"""Client-side cost of one 512x512 frame on the WebUI HTTP path (goal: <= 15 ms).

What the webui_api backend itself spends per frame, without the server: PNG + base64 of the
init image and the control map, building and serializing the JSON body, and decoding the
answer (JSON, base64, PNG -> RGB). For context it also times a full round trip against the
WebUI API double on loopback with zero render delay (that figure includes the double's own
work: decoding, a numpy "render", PNG-encoding the answer).

    .venv/bin/python benchmarks/bench_http_overhead.py [--frames 40] [--size 512]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.doubles.webui_double import DoubleServer, encode_png, make_webui_double  # noqa: E402
from vidstyle.backends.base import Img2ImgRequest  # noqa: E402
from vidstyle.backends.webui_api import WebUIApiBackend, build_payload, result_from_response  # noqa: E402
from vidstyle.backends.webui_http import encode_png_base64  # noqa: E402
from vidstyle.spec import JobSpec  # noqa: E402


def render_like_frame(size: int, index: int) -> Image.Image:
    """A smooth shaded figure with texture and noise, closer to a 3D render than flat colour."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shift = index * 0.05
    r = 128 + 100 * np.sin(6 * x + shift) * np.cos(4 * y)
    g = 128 + 90 * np.cos(5 * y - shift)
    b = 128 + 80 * np.sin(3 * (x + y) + shift)
    image = np.stack([r, g, b], axis=-1)
    cv2.circle(image, (size // 2, size // 2), size // 4, (240, 200, 180), -1)
    image += np.random.default_rng(index).normal(0, 4, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def canny_map(image: Image.Image) -> Image.Image:
    edges = cv2.Canny(np.asarray(image.convert("L")), 100, 200)
    return Image.fromarray(edges).convert("RGB")


def spec_for(urls: list[str], size: int) -> JobSpec:
    return JobSpec.parse_obj(
        {
            "size": {"width": size, "height": size},
            "prompt": "1girl, anime style, masterpiece",
            "model": {"checkpoint": "v1-5-pruned-emaonly", "loras": []},
            "sampling": {"seed": 1, "steps": 1, "sampler": "Euler a"},
            "backend": {"kind": "webui_api", "webui_urls": urls or ["http://127.0.0.1:9"]},
        }
    )


def request_for(spec: JobSpec, index: int, init: Image.Image, control: Image.Image) -> Img2ImgRequest:
    return Img2ImgRequest(
        frame_index=index,
        init_image=init,
        control_image=control,
        prompt=spec.prompt,
        negative_prompt="",
        checkpoint=spec.model.checkpoint,
        loras=[],
        controlnet=spec.controlnet,
        width=spec.size.width,
        height=spec.size.height,
        denoise=0.5,
        steps=1,
        cfg_scale=7.0,
        sampler="Euler a",
        scheduler="Automatic",
        seed=index,
    )


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, fastest) milliseconds of `repeats` calls; the fastest shows the cost without
    interference from other processes on a shared machine."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples)


def client_side_costs(size: int, frames: int) -> dict[str, tuple[float, float]]:
    server = DoubleServer(make_webui_double()).start()  # only to get a real plan from preflight
    try:
        spec = spec_for([server.url], size)
        backend = WebUIApiBackend(spec)
        backend.preflight()
        plan = backend._servers[0].plans[next(iter(backend._servers[0].plans))]  # the resolved names
        backend.close()
    finally:
        server.stop()
    init, control = render_like_frame(size, 0), None
    control = canny_map(init)
    request = request_for(spec, 0, init, control)
    init_b64, control_b64 = encode_png_base64(init), encode_png_base64(control)
    body = json.dumps(build_payload(plan, request, init_b64, control_b64), separators=(",", ":")).encode()
    # The answer as the WebUI sends it: default-compression PNG plus an info JSON string.
    answer = json.dumps(
        {
            "images": [encode_png(render_like_frame(size, 1))],
            "parameters": {},
            "info": json.dumps({"seed": 0, "infotexts": ["x"]}),
        }
    ).encode()
    costs = {
        "encode init (PNG+base64)": timed(lambda: encode_png_base64(init), frames),
        "encode control map (PNG+base64)": timed(lambda: encode_png_base64(control), frames),
        "build + serialize JSON body": timed(
            lambda: json.dumps(build_payload(plan, request, init_b64, control_b64), separators=(",", ":")).encode(),
            frames,
        ),
        "parse answer JSON + decode image": timed(
            lambda: result_from_response(json.loads(answer), server.url, request), frames
        ),
    }
    costs["total client-side"] = (sum(c[0] for c in costs.values()), sum(c[1] for c in costs.values()))
    # What the render loop actually does: the job folder already holds both PNGs, so the
    # backend only base64-encodes the file bytes (Img2ImgRequest.init_png / control_png).
    init_png, control_png = base64.b64decode(init_b64), base64.b64decode(control_b64)
    reuse = timed(lambda: (base64.b64encode(init_png), base64.b64encode(control_png)), frames)
    rest = [costs["build + serialize JSON body"], costs["parse answer JSON + decode image"]]
    costs["reuse job PNGs (base64 only)"] = reuse
    costs["total, render-loop path"] = (reuse[0] + sum(c[0] for c in rest), reuse[1] + sum(c[1] for c in rest))
    print(f"request body {len(body) / 1024:.0f} KiB, answer {len(answer) / 1024:.0f} KiB")
    return costs


def loopback_round_trip(size: int, frames: int) -> float:
    server = DoubleServer(make_webui_double(delay=0.0)).start()
    try:
        spec = spec_for([server.url], size)
        backend = WebUIApiBackend(spec)
        backend.preflight()
        images = [(render_like_frame(size, i), None) for i in range(4)]
        pairs = [(init, canny_map(init)) for init, _ in images]
        backend.img2img(request_for(spec, 0, *pairs[0]))  # warm-up (connection, caches)
        start = time.perf_counter()
        for index in range(frames):
            backend.img2img(request_for(spec, index, *pairs[index % len(pairs)]))
        elapsed = time.perf_counter() - start
        backend.close()
        return elapsed / frames * 1000
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    print(f"WebUI HTTP path, {args.size}x{args.size} frames, {args.frames} runs each")
    costs = client_side_costs(args.size, args.frames)
    print(f"  {'step':<36} {'median':>9} {'fastest':>9}")
    for name, (median, fastest) in costs.items():
        print(f"  {name:<36} {median:6.2f} ms {fastest:6.2f} ms")
    median, fastest = costs["total, render-loop path"]
    verdict = "meets" if median <= 15.0 else "misses"
    print(
        f"client-side overhead per frame: {median:.2f} ms median, {fastest:.2f} ms fastest ({verdict} the 15 ms goal)"
    )
    round_trip = loopback_round_trip(args.size, max(args.frames // 2, 5))
    print(f"full round trip to the WebUI double on loopback (incl. the double's own work): {round_trip:.1f} ms/frame")


if __name__ == "__main__":
    main()
