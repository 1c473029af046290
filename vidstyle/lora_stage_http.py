"""A LoraStage for WebUIs over HTTP: the folder is the user's `--webui-lora-dir`, refreshed by API.

A1111 v1.10.1 (extensions-builtin/Lora/scripts/lora_script.py) serves GET /sdapi/v1/loras
(name, alias, path, metadata of every LoRA it knows) and POST /sdapi/v1/refresh-loras (rescan
the Lora folders); it has no route that receives a file. After the copy every server is
refreshed and must then list every copied name: a server that does not read that folder is
named in one sentence instead of failing later on a LoRA it cannot find.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .backends.webui_http import WebUIClient, WebUIHTTPError, resolve_auth
from .backends.webui_preflight import describe_server_error
from .errors import PreflightError
from .lora_stage import LoraStage

ROUTE_TIMEOUT = 60.0  # a rescan hashes nothing, but a big Lora folder takes a while to list


def _names(client: WebUIClient) -> set[str]:
    listed = client.get_json("/sdapi/v1/loras", timeout=ROUTE_TIMEOUT)
    if not isinstance(listed, list):
        raise PreflightError(
            f"The WebUI at {client.url} answered /sdapi/v1/loras with no list; check that it is a WebUI."
        )
    return {str(e.get("name")) for e in listed if isinstance(e, dict)}


def http_stage(folder: Path, urls: Sequence[str], auth: str | None, timeout: float) -> LoraStage:
    if not urls:
        raise PreflightError("The webui_api backend needs at least one WebUI URL; give it with --webui URL.")
    auth = resolve_auth(auth)
    clients = [WebUIClient(url, auth, min(timeout, ROUTE_TIMEOUT)) for url in urls]

    def call(action: str, client: WebUIClient, function):  # type: ignore[no-untyped-def]
        try:
            return function()
        except WebUIHTTPError as err:
            raise PreflightError(describe_server_error(client.url, err, auth is not None, action)) from None

    def listed() -> set[str]:
        names: set[str] = set()
        for client in clients:
            names |= call("extension", client, lambda c=client: _names(c))
        return names

    def refresh(expected: list[str]) -> None:
        for client in clients:
            call(
                "extension", client, lambda c=client: c.post_json("/sdapi/v1/refresh-loras", {}, timeout=ROUTE_TIMEOUT)
            )
            missing = [name for name in expected if name not in call("extension", client, lambda c=client: _names(c))]
            if missing:
                raise PreflightError(
                    f"The WebUI at {client.url} does not list {missing[0]} after a refresh, so it does not read "
                    f"{folder}; give --webui-lora-dir as the folder that WebUI loads LoRAs from (models/Lora or its "
                    "--lora-dir)."
                )
        if not expected:
            for client in clients:
                client.close()

    return LoraStage(folder, refresh, listed)
