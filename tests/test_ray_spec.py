"""The ray backend's JobSpec fields and CLI flags, and that HTTP clients cannot reach a Ray cluster.

Needs no Ray: runs in both venvs."""

from __future__ import annotations

import pytest

from vidstyle.cli import build_parser, collect_overrides
from vidstyle.compat import ValidationError
from vidstyle.errors import SpecError
from vidstyle.policy import PolicyError, ServerPolicy
from vidstyle.spec import field_info, load_spec


def _stylize(*flags: str) -> dict:
    return collect_overrides(build_parser().parse_args(["stylize", "clip.mp4", "-o", "job", *flags]))


def test_ray_flag_picks_the_backend_and_sets_the_fields() -> None:
    overrides = _stylize("--ray", "10.0.0.5:6379", "--ray-workers", "4", "--ray-gpus-per-worker", "0.5")
    spec = load_spec(None, overrides)
    assert spec.backend.kind == "ray"
    assert (spec.backend.ray_address, spec.backend.ray_workers, spec.backend.ray_gpus_per_worker) == (
        "10.0.0.5:6379",
        4,
        0.5,
    )
    assert load_spec(None, _stylize("--ray", "auto")).backend.kind == "ray"
    # An explicit --backend wins, as with --webui.
    assert load_spec(None, _stylize("--ray", "auto", "--backend", "diffusers")).backend.kind == "diffusers"


def test_defaults_and_bounds_are_declared_once() -> None:
    spec = load_spec(None, {"backend.kind": "ray"})
    assert (spec.backend.ray_address, spec.backend.ray_workers, spec.backend.ray_gpus_per_worker) == (
        "auto",
        None,
        None,
    )
    assert field_info("backend.ray_workers")["ge"] == 1
    assert field_info("backend.ray_gpus_per_worker")["ge"] == 0
    assert "ray start --head" in field_info("backend.ray_address")["help"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("backend.ray_workers", 0),
        ("backend.ray_gpus_per_worker", -1),
        ("backend.ray_address", ""),
        ("backend.ray_address", "10.0.0.5:6379 --block"),
    ],
)
def test_bad_values_are_refused_naming_the_field(key: str, value: object) -> None:
    with pytest.raises(SpecError, match=key):
        load_spec(None, {"backend.kind": "ray", key: value})


def test_http_clients_cannot_choose_the_ray_backend() -> None:
    """A job over HTTP naming a Ray cluster would make the server connect wherever the client says."""
    spec = load_spec(None, {"backend.kind": "ray", "backend.ray_address": "203.0.113.9:6379"})
    with pytest.raises(PolicyError, match="does not let clients choose the 'ray' backend"):
        ServerPolicy().check_spec(spec)
    with pytest.raises(ValidationError, match="backends"):  # the operator's policy has no way to allow it either
        ServerPolicy(backends=["ray"])


def test_without_ray_installed_preflight_says_how_to_get_it() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("Ray is installed here; this checks an install without the vidstyle[ray] extra")
    from vidstyle.backends import create_backend
    from vidstyle.errors import PreflightError

    backend = create_backend(load_spec(None, {"backend.kind": "ray"}))
    with pytest.raises(PreflightError, match=r"pip install 'vidstyle\[ray\]'"):
        backend.preflight()
    backend.close()
