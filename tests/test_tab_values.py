"""The tab's pure helpers (widget values <-> JobSpec, status text) work without gradio installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vidstyle.tab_status import jobs_markdown
from vidstyle.tab_values import LORA_NAMES, LORA_WEIGHT, UPLOAD, spec_to_values, union_of, values_to_spec

ROOT = Path(__file__).resolve().parents[1]


def test_pure_helpers_import_with_gradio_blocked() -> None:
    # sys.modules[name] = None makes `import gradio` raise ImportError, as if it were not installed.
    code = (
        "import sys; sys.modules['gradio'] = None\n"
        "from vidstyle.tab_values import values_to_spec\n"
        "from vidstyle.tab_status import status_html\n"
        "spec = values_to_spec({'prompt': 'a cat', 'source.end_time': 0})\n"
        "assert spec.prompt == 'a cat' and spec.source.end_time is None\n"
        "assert 'No job selected' in status_html(None)\n"
        "assert 'gradio' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_values_round_trip_through_a_spec() -> None:
    spec = values_to_spec({UPLOAD: "/videos/a.mp4", LORA_NAMES: ["style"], LORA_WEIGHT: 0.5, "sampling.steps": 12.0})
    assert spec.source.path == "/videos/a.mp4" and spec.sampling.steps == 12
    assert [(lora.name, lora.weight) for lora in spec.model.loras] == [("style", 0.5)]
    values = spec_to_values(spec, [LORA_NAMES, LORA_WEIGHT, "sampling.steps"])
    assert values == {LORA_NAMES: ["style"], LORA_WEIGHT: 0.5, "sampling.steps": 12}


def test_union_keeps_the_hosts_order_and_adds_missing_names() -> None:
    assert union_of(["a", "b"], ["b", "c"]) == ["a", "b", "c"]


def test_jobs_table_escapes_the_column_separator() -> None:
    table = jobs_markdown([{"id": "j1", "state": "done", "done": 3, "frames": 3, "message": "a|b"}])
    assert "| j1 | done | 3/3 | a/b |" in table
    assert jobs_markdown([]) == "No jobs yet."
