"""Caption with a running WebUI's own tagger, as people do in its "Interrogate DeepBooru" button.

    python -m trainer prep SRC --out DATASET --name NAME --tagger webui:http://127.0.0.1:7860

POST /sdapi/v1/interrogate with {"image": base64 PNG, "model": "deepdanbooru"} answers
{"caption": "tag, tag, ..."} (AUTOMATIC1111 v1.10.1 modules/api: InterrogateRequest,
InterrogateResponse, Api.interrogateapi; Forge keeps the route). DeepBooru writes tags most
likely first, with spaces for underscores and parentheses escaped ("star \\(symbol\\)"),
and "(tag:0.873)" when the WebUI is set to show ranks; the same tag cleanup as the other
taggers then applies. Any model other than clip/deepdanbooru is a 404 "Model not found";
without --api the route itself is a 404; DeepBooru downloads its weights on first use, so a
WebUI that cannot fetch them answers 500.

The WebUI runs one interrogation at a time (its queue lock); a few requests in flight keep it
busy while the next images are encoded and sent. Credentials are the video backend's: the
`user:password` of the WebUI's --api-auth, from --webui-auth or VIDSTYLE_WEBUI_AUTH.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from vidstyle.backends.webui_http import (
    NOT_FOUND,
    SERVER_DOWN_KINDS,
    SERVER_ERROR,
    UNAUTHORIZED,
    WebUIClient,
    WebUIHTTPError,
    encode_png_base64,
    normalize_url,
    resolve_auth,
)
from vidstyle.errors import PreflightError, UserInputError, VidstyleError

PREFIX = "webui:"
ROUTE = "/sdapi/v1/interrogate"
MODEL = "deepdanbooru"
_ESCAPED = re.compile(r"\\([\\()])")  # deepbooru_escape: "\(" -> "("


def webui_url(tagger: str) -> str:
    """`webui:URL` -> the normalised http(s) URL; a URL that carries a password is refused,
    since the dataset's prep.json records the tagger and secrets never enter it."""
    if not tagger.startswith(PREFIX):
        raise UserInputError(f"--tagger takes webui:URL (e.g. webui:http://127.0.0.1:7860), not '{tagger}'.")
    url = normalize_url(tagger[len(PREFIX) :])
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserInputError(f"'{tagger}' is not a WebUI address; use webui:http://HOST:PORT.")
    if parts.username or parts.password:
        raise UserInputError(
            "Put the WebUI's user:password in --webui-auth or VIDSTYLE_WEBUI_AUTH, not in the --tagger URL."
        )
    return url


def caption_tags(caption: str) -> list[str]:
    """DeepBooru's caption -> raw tags (escapes undone; weights and underscores are left to
    the shared cleanup in captions.normalise_tags)."""
    return [_ESCAPED.sub(r"\1", tag) for tag in caption.split(",")]


class WebUITagger:
    """tag(images) -> tags per image, through one WebUI; `check()` fails fast with one sentence."""

    name = "webui deepdanbooru"

    def __init__(self, url: str, auth: str | None = None, workers: int = 4, timeout: float = 120.0) -> None:
        self.url = normalize_url(url)
        self.workers = max(1, workers)
        self.client = WebUIClient(self.url, resolve_auth(auth), timeout, max_connections=self.workers + 1)

    def check(self) -> None:
        """One small interrogation: reachable, API on, login right, DeepBooru loadable."""
        self._interrogate(np.full((64, 64, 3), 255, np.uint8))

    def tag(self, images: Sequence[np.ndarray]) -> list[list[str]]:
        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(images)))) as pool:
            return list(pool.map(self._interrogate, images))

    def close(self) -> None:
        self.client.close()

    def _interrogate(self, rgb: np.ndarray) -> list[str]:
        body = {"image": encode_png_base64(Image.fromarray(np.ascontiguousarray(rgb))), "model": MODEL}
        try:
            answer = self.client.post_json(ROUTE, body)
        except WebUIHTTPError as err:
            raise self._explain(err) from None
        caption = answer.get("caption") if isinstance(answer, dict) else None
        if not isinstance(caption, str):
            raise PreflightError(
                f"The WebUI at {self.url} answered {ROUTE} without a caption; is it an AUTOMATIC1111 or Forge WebUI?"
            )
        return caption_tags(caption)

    def _explain(self, err: WebUIHTTPError) -> VidstyleError:
        where = f"The WebUI at {self.url}"
        if err.kind in SERVER_DOWN_KINDS:
            return PreflightError(
                f"Cannot reach the WebUI at {self.url} ({err.message}); start it with --api (and --listen for another "
                "machine), or fix the --tagger URL."
            )
        if err.kind == UNAUTHORIZED:
            return PreflightError(
                f"{where} refused the login; pass the user:password of its --api-auth with --webui-auth or "
                "VIDSTYLE_WEBUI_AUTH."
            )
        if err.kind == NOT_FOUND and isinstance(err.detail, dict) and err.detail.get("detail") == "Model not found":
            return PreflightError(
                f"{where} has no DeepBooru interrogator ('{MODEL}'); caption with a WD14 model instead (--tagger-model "
                "MODEL.onnx)."
            )
        if err.kind == NOT_FOUND:
            return PreflightError(f"{where} does not serve {ROUTE}: restart it with the --api command-line flag.")
        if err.kind == SERVER_ERROR:
            return PreflightError(
                f"{where} could not run DeepBooru ({err.message}); it downloads model-resnet_custom_v3.pt into "
                "models/torch_deepdanbooru on first use, so check the WebUI's console, or put that file there by hand."
            )
        return PreflightError(
            f"{where} refused the interrogation ({err.message}); check that it is an AUTOMATIC1111 or Forge WebUI."
        )
