"""How long the checks before frame 1 take against a WebUI that is up (goal: preflight < 1 s).

A job now runs every check that can fail before frame 1 (probe the source, its selection,
the output folder, the backend's preflight) before it writes its folder or decodes a frame
(issue 9 item 7, issue 16 item 1). This prints, against the WebUI API double on loopback
(A1111 + sd-webui-controlnet and Forge flavours, one LoRA, ControlNet on):

* the WebUI backend's preflight alone, with a fresh backend each time as every job has;
* start_job as `vidstyle stylize` calls it: source checks + preflight + writing the folder.

The double is served from its own process, as a WebUI is: served from a thread of the
measuring process, every loopback request costs ~45 ms here (against ~1 ms from another
process), which would measure the harness, not preflight.

    .venv/bin/python benchmarks/bench_preflight.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import make_source  # noqa: E402
from vidstyle.backends.webui_api import WebUIApiBackend  # noqa: E402
from vidstyle.render import start_job  # noqa: E402
from vidstyle.spec import JobSpec, load_spec  # noqa: E402


def spec_for(url: str, source: Path) -> JobSpec:
    return load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(source),
            "backend.kind": "webui_api",
            "backend.webui_urls": [url],
            "model.checkpoint": "v1-5-pruned-emaonly",
            "model.loras": [{"name": "zhongli", "weight": 0.8}],
        },
    )


SERVE = """
import sys, uvicorn
sys.path.insert(0, sys.argv[1])
from tests.doubles.webui_double import make_webui_double
app = make_webui_double(flavor=sys.argv[2], loras=["zhongli"])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False)
"""


def serve_double(flavor: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT), flavor, str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the WebUI double did not start")


def figures(label: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(f"  {label:<34} median {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms   ({len(ms)} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidstyle-bench-preflight-"))
    try:
        source = make_source(work / "clip.mp4", frames=300, size=256)  # 10 s: the clip is never decoded here
        for flavor in ("a1111", "forge"):
            process, url = serve_double(flavor)
            try:
                spec = spec_for(url, source)
                print(f"WebUI double ({flavor}) at {url}, in its own process")
                alone: list[float] = []
                for _ in range(args.runs):
                    backend = WebUIApiBackend(spec)
                    started = time.perf_counter()
                    backend.preflight()
                    alone.append(time.perf_counter() - started)
                    backend.close()
                figures("backend.preflight()", alone)
                whole: list[float] = []
                for run in range(args.runs):
                    backend = WebUIApiBackend(spec)
                    started = time.perf_counter()
                    job = start_job(spec, work / f"{flavor}-job{run}", backend)
                    whole.append(time.perf_counter() - started)
                    job.close()
                    backend.close()
                figures("start_job (checks + preflight)", whole)
            finally:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
