"""What one WebUI server offers, and how our spec's names are said to it.

`fetch_catalog` reads the server's lists (checkpoints, LoRAs, samplers, schedulers,
ControlNet models and preprocessors); `plan_for` resolves the names a job wants against
them, so every request uses the exact names that server lists. Both return one sentence
per problem instead of raising, so preflight can report every problem of every server.

Upstream facts relied on (AUTOMATIC1111 modules/api, sd-webui-controlnet scripts/api.py,
Forge lib_controlnet): the WebUI silently drops an unknown checkpoint override and LoRA
tag and (1.9+) falls back to its default sampler for an unknown one, so these checks are
the only place such a mistake is caught. Forge's built-in ControlNet has no
/controlnet/version and names the identity preprocessor "None" (sd-webui-controlnet: "none").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .webui_http import BAD_RESPONSE, NOT_FOUND, TIMEOUT, UNAUTHORIZED, UNREACHABLE, WebUIClient, WebUIHTTPError

SD_WEBUI_CONTROLNET = "sd-webui-controlnet"
FORGE_CONTROLNET = "forge"
AUTOMATIC = "Automatic"
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")
_LIST_LIMIT = 12
_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Wanted:
    """The names a frame asks for, as the user wrote them."""

    checkpoint: str
    loras: tuple[tuple[str, float], ...]
    sampler: str
    scheduler: str
    # None when ControlNet is off; else (model, preprocessor 'ours'|'server', low, high).
    controlnet: tuple[str, str, int, int] | None


@dataclass
class ControlNetCatalog:
    flavor: str  # SD_WEBUI_CONTROLNET or FORGE_CONTROLNET
    models: list[str]
    modules: list[str]
    module_detail: dict[str, Any]


@dataclass
class ServerCatalog:
    url: str
    checkpoints: list[dict[str, Any]]
    samplers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]] | None  # None: WebUI before 1.9 (no schedule types)
    loras: list[dict[str, Any]] | None  # None: not fetched (no LoRA wanted)
    controlnet: ControlNetCatalog | None  # None: not fetched (ControlNet off)


@dataclass(frozen=True)
class ServerPlan:
    """Our names translated into that server's names."""

    url: str
    checkpoint_title: str
    lora_tags: tuple[tuple[str, float], ...]
    sampler_name: str
    scheduler: str | None  # None: do not send the field (the server predates it)
    controlnet_flavor: str | None
    controlnet_model: str | None
    controlnet_module: str | None


def describe_server_error(url: str, err: WebUIHTTPError, auth_given: bool, what: str) -> str:
    """One sentence for a failed call during preflight or a probe."""
    if err.kind == UNREACHABLE:
        return f"Cannot reach the WebUI at {url} ({err.message}); start it with --api or fix the URL."
    if err.kind == TIMEOUT:
        return f"The WebUI at {url} did not answer ({err.message}); check that it is running and not stuck."
    if err.kind == UNAUTHORIZED:
        if auth_given:
            return f"The WebUI at {url} rejected the user name or password; give the user:password of its --api-auth."
        return f"The WebUI at {url} requires a login (it runs with --api-auth); give its user:password."
    if err.kind == BAD_RESPONSE:
        return (
            f"The server at {url} does not answer like a Stable Diffusion WebUI ({err.message}); check the URL and "
            "port."
        )
    if err.kind == NOT_FOUND and what == "api":
        return (
            f"The WebUI at {url} does not serve its API (/sdapi/v1 routes answer 404); restart it with the --api flag."
        )
    return f"The WebUI at {url} failed a check: {err.message}; check its console for errors."


def fetch_catalog(
    client: WebUIClient, wanted: Wanted, timeout: float, auth_given: bool
) -> tuple[ServerCatalog | None, list[str]]:
    url = client.url
    try:
        checkpoints = _list(client.get_json("/sdapi/v1/sd-models", timeout=timeout))
        samplers = _list(client.get_json("/sdapi/v1/samplers", timeout=timeout))
        schedulers = _optional_list(client, "/sdapi/v1/schedulers", timeout)
    except WebUIHTTPError as err:
        return None, [describe_server_error(url, err, auth_given, "api")]
    problems: list[str] = []
    loras: list[dict[str, Any]] | None = None
    controlnet: ControlNetCatalog | None = None
    try:
        if wanted.loras:
            loras = _optional_list(client, "/sdapi/v1/loras", timeout)
            if loras is None:
                problems.append(
                    f"The WebUI at {url} lists no LoRAs (no /sdapi/v1/loras); enable its built-in Lora extension."
                )
        if wanted.controlnet is not None:
            controlnet = _fetch_controlnet(client, timeout)
            if controlnet is None:
                problems.append(
                    f"ControlNet is not installed on the WebUI at {url} (no /controlnet/model_list); "
                    "install sd-webui-controlnet from its Extensions tab, or turn ControlNet off."
                )
    except WebUIHTTPError as err:
        return None, [describe_server_error(url, err, auth_given, "extension")]
    return ServerCatalog(url, checkpoints, samplers, schedulers, loras, controlnet), problems


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise WebUIHTTPError(BAD_RESPONSE, "a list route did not return a JSON list")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebUIHTTPError(BAD_RESPONSE, "a ControlNet route did not return a JSON object")
    return value


def _optional_list(client: WebUIClient, path: str, timeout: float) -> list[Any] | None:
    try:
        return _list(client.get_json(path, timeout=timeout))
    except WebUIHTTPError as err:
        if err.kind == NOT_FOUND:
            return None
        raise


def _fetch_controlnet(client: WebUIClient, timeout: float) -> ControlNetCatalog | None:
    try:
        client.get_json("/controlnet/version", timeout=timeout)
        flavor = SD_WEBUI_CONTROLNET
    except WebUIHTTPError as err:
        if err.kind != NOT_FOUND:
            raise
        flavor = FORGE_CONTROLNET  # Forge's built-in ControlNet has model_list but no version route
    try:
        models = client.get_json("/controlnet/model_list", timeout=timeout)
    except WebUIHTTPError as err:
        if err.kind == NOT_FOUND:
            return None
        raise
    modules = _dict(client.get_json("/controlnet/module_list", timeout=timeout))
    return ControlNetCatalog(
        flavor=flavor,
        models=[m for m in _list(_dict(models).get("model_list")) if m != "None"],
        modules=_list(modules.get("module_list")),
        module_detail=modules.get("module_detail") or {},
    )


def plan_for(catalog: ServerCatalog, wanted: Wanted) -> tuple[ServerPlan | None, list[str]]:
    """Resolve every wanted name on this server; (plan, []) or (None, problems)."""
    problems: list[str] = []
    title = _resolve_checkpoint(catalog, wanted.checkpoint, problems)
    loras = _resolve_loras(catalog, wanted.loras, problems)
    sampler, scheduler = _resolve_sampler(catalog, wanted.sampler, wanted.scheduler, problems)
    cn_model = cn_module = cn_flavor = None
    if wanted.controlnet is not None and catalog.controlnet is not None:
        cn_flavor = catalog.controlnet.flavor
        cn_model, cn_module = _resolve_controlnet(catalog.url, catalog.controlnet, wanted.controlnet, problems)
    if problems or title is None or sampler is None:
        return None, problems
    return ServerPlan(catalog.url, title, loras, sampler, scheduler, cn_flavor, cn_model, cn_module), []


def strip_hash(name: str) -> str:
    """'model.safetensors [6ce0161689]' -> 'model.safetensors'."""
    return _HASH_SUFFIX.sub("", name)


def _stem(name: str) -> str:
    return PurePath(name.replace("\\", "/")).stem


def _base(name: str) -> str:
    return PurePath(name.replace("\\", "/")).name


def _looks_like_file(name: str) -> bool:
    return "/" in name or "\\" in name or name.casefold().endswith(_MODEL_EXTENSIONS)


def _find(wanted: str, entries: Sequence[Any], keys: Callable[[Any], Iterable[str | None]]) -> list[Any]:
    """Entries one of whose keys equals the wanted name: exact first, then ignoring case."""
    bare = strip_hash(wanted)
    tries = [wanted, bare]
    if _looks_like_file(bare):  # a path or file name: also try its file name and stem
        tries += [_base(bare), _stem(bare)]
    for fold in (False, True):

        def norm(name: str, fold: bool = fold) -> str:
            return name.casefold() if fold else name

        for attempt in dict.fromkeys(t for t in tries if t):
            found = [e for e in entries if norm(attempt) in {norm(k) for k in keys(e) if k}]
            if found:
                return found
    return []


def _names(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_LIST_LIMIT]) or "(none)"
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def _checkpoint_keys(entry: dict[str, Any]) -> list[str | None]:
    title = str(entry.get("title") or "")
    filename = str(entry.get("filename") or "")
    return [
        title,
        strip_hash(title),
        _stem(strip_hash(title)),
        entry.get("model_name"),
        _base(filename),
        _stem(filename),
        entry.get("hash"),
        entry.get("sha256"),
    ]


def _resolve_checkpoint(catalog: ServerCatalog, wanted: str, problems: list[str]) -> str | None:
    found = _find(wanted, catalog.checkpoints, _checkpoint_keys)
    wanted_hash = _HASH_SUFFIX.search(wanted)
    if len(found) > 1 and wanted_hash:
        digits = wanted_hash.group(0).strip(" []").lower()
        found = [e for e in found if str(e.get("hash") or "").lower() == digits] or found
    titles = [str(e.get("title")) for e in found]
    if len(found) == 1:
        return titles[0]
    if found:
        problems.append(
            f"Checkpoint '{wanted}' matches several models on the WebUI at {catalog.url} ({_names(titles)}); "
            "give the full title."
        )
        return None
    available = [str(e.get("title")) for e in catalog.checkpoints]
    problems.append(
        f"Checkpoint '{wanted}' is not on the WebUI at {catalog.url}; put it in models/Stable-diffusion "
        f"or choose one of: {_names(available)}."
    )
    return None


def _resolve_loras(
    catalog: ServerCatalog, wanted: Sequence[tuple[str, float]], problems: list[str]
) -> tuple[tuple[str, float], ...]:
    if not wanted or catalog.loras is None:
        return ()
    tags = []
    for name, weight in wanted:
        found = _find(name, catalog.loras, lambda e: [e.get("name"), e.get("alias"), _stem(str(e.get("path") or ""))])
        if found:
            tags.append((str(found[0]["name"]), weight))
        else:
            available = [str(e.get("name")) for e in catalog.loras]
            problems.append(
                f"LoRA '{name}' is not on the WebUI at {catalog.url}; put it in models/Lora and refresh, "
                f"or choose one of: {_names(available)}."
            )
    return tuple(tags)


def _scheduler_labels(catalog: ServerCatalog) -> list[str]:
    return [str(s.get("label")) for s in catalog.schedulers or []]


def _find_sampler(catalog: ServerCatalog, name: str) -> str | None:
    found = _find(name, catalog.samplers, lambda e: [e.get("name"), *(e.get("aliases") or [])])
    return str(found[0]["name"]) if found else None


def _find_scheduler(catalog: ServerCatalog, name: str) -> str | None:
    found = _find(name, catalog.schedulers or [], lambda e: [e.get("label"), e.get("name"), *(e.get("aliases") or [])])
    return str(found[0]["label"]) if found else None


def _split_scheduler_suffix(catalog: ServerCatalog, sampler: str) -> tuple[str, str] | None:
    """WebUI 1.9+ reads 'DPM++ 2M Karras' as sampler 'DPM++ 2M' + schedule type 'Karras'."""
    for entry in catalog.schedulers or []:
        for option in [entry.get("label"), entry.get("name"), *(entry.get("aliases") or [])]:
            if option and sampler.casefold().endswith(" " + str(option).casefold()):
                base = _find_sampler(catalog, sampler[: -len(str(option)) - 1])
                if base:
                    return base, str(entry.get("label"))
    return None


def _resolve_sampler(
    catalog: ServerCatalog, sampler: str, scheduler: str, problems: list[str]
) -> tuple[str | None, str | None]:
    url = catalog.url
    is_auto = scheduler.strip().casefold() == AUTOMATIC.casefold()
    name = _find_sampler(catalog, sampler)
    from_suffix: str | None = None
    if name is None and catalog.schedulers is not None:
        split = _split_scheduler_suffix(catalog, sampler)
        if split:
            name, from_suffix = split
    if name is None:
        available = [str(s.get("name")) for s in catalog.samplers]
        problems.append(f"Sampler '{sampler}' is not on the WebUI at {url}; choose one of: {_names(available)}.")
        return None, None
    if catalog.schedulers is None:
        if not is_auto:
            problems.append(
                f"The WebUI at {url} is older than 1.9 and has no schedule types; set the scheduler to Automatic "
                "(or use a sampler name that includes it, e.g. 'DPM++ 2M Karras')."
            )
        return name, None
    if is_auto:
        return name, from_suffix or AUTOMATIC
    label = _find_scheduler(catalog, scheduler)
    if label is None:
        problems.append(
            f"Schedule type '{scheduler}' is not on the WebUI at {url}; choose one of: "
            f"{_names(_scheduler_labels(catalog))}."
        )
        return name, None
    if from_suffix and from_suffix != label:
        problems.append(
            f"Sampler '{sampler}' already names schedule type '{from_suffix}' but the scheduler is '{scheduler}'; "
            "set one of them only."
        )
    return name, label


def _resolve_controlnet(
    url: str, catalog: ControlNetCatalog, wanted: tuple[str, str, int, int], problems: list[str]
) -> tuple[str | None, str | None]:
    model_name, preprocessor, low, high = wanted
    found = _find(model_name, catalog.models, lambda m: [m, strip_hash(m)])
    model = found[0] if found else None
    if model is None:
        problems.append(
            f"ControlNet model '{model_name}' is not on the WebUI at {url}; put it in models/ControlNet "
            f"or choose one of: {_names(catalog.models)}."
        )
    module_wanted = "none" if preprocessor == "ours" else "canny"
    module = next((m for m in catalog.modules if str(m).casefold() == module_wanted), None)
    if module is None:
        problems.append(
            f"ControlNet preprocessor '{module_wanted}' is not on the WebUI at {url}; update its ControlNet extension"
            + (" or use preprocessor 'ours'." if preprocessor == "server" else ".")
        )
    elif preprocessor == "server":
        _check_thresholds(url, catalog.module_detail.get(module), low, high, problems)
    return model, module


def _check_thresholds(url: str, detail: Any, low: int, high: int, problems: list[str]) -> None:
    """sd-webui-controlnet silently swaps an out-of-range threshold for its default: refuse instead."""
    sliders = [s for s in (detail or {}).get("sliders", []) if "threshold" in str(s.get("name", "")).casefold()]
    for value, slider, which in zip((low, high), sliders, ("low", "high"), strict=False):
        lo, hi = slider.get("min"), slider.get("max")
        if lo is not None and hi is not None and not lo <= value <= hi:
            problems.append(
                f"Canny {which} threshold {value} is outside {lo:g}..{hi:g}, which the ControlNet extension at {url} "
                "accepts; change it or use preprocessor 'ours'."
            )


def find_listed(wanted: str, listed: Sequence[str]) -> str | None:
    """The one entry of a host's model list that `wanted` names, as preflight would resolve it.

    Matches the exact entry, the entry without its ' [hash]', its file name or its stem, so the
    preset's 'anything-v5' finds 'anything-v5.safetensors [6ce0161689]' or a path to that file.
    """
    found = _find(
        wanted, list(listed), lambda name: [name, strip_hash(name), _base(strip_hash(name)), _stem(strip_hash(name))]
    )
    return found[0] if len(found) == 1 else None
