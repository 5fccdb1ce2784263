"""The start rules of `swiftlike web-ui`: host, port, language and auth from flags, else the environment (ms-swift's
WEBUI_SERVER / WEBUI_PORT / SWIFT_UI_LANG names). Decided before gradio loads, so a refusal is one quick line."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..registry import SwiftlikeError
from ..serve.arguments import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
LANGS = ("en", "zh")


@dataclass(frozen=True)
class UISettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    lang: str = "en"
    auth: Optional[tuple[str, str]] = None
    output_dir: str = "output"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _port(value, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SwiftlikeError(f"{where} {value!r}: not a port number") from None
    if not 0 < port < 65536:
        raise SwiftlikeError(f"{where} {port}: a port is 1-65535")
    return port


def _auth(value: str, where: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SwiftlikeError(f"{where}: expected USER:PASSWORD")
    return user, password


def resolve_settings(host: Optional[str] = None, port=None, lang: Optional[str] = None, auth: Optional[str] = None,
                     share: bool = False, output_dir: Optional[str] = None, env=None) -> UISettings:
    """Flags first, then WEBUI_SERVER, WEBUI_PORT, SWIFTLIKE_UI_LANG (or SWIFT_UI_LANG), WEBUI_AUTH."""
    env = os.environ if env is None else env
    if share:
        raise SwiftlikeError("--share: gradio's public share links are refused (they tunnel this machine to the "
                             "internet); serve on --host with --auth instead")
    host = host or env.get("WEBUI_SERVER") or DEFAULT_HOST
    port = _port(port, "--port") if port is not None else (
        _port(env["WEBUI_PORT"], "WEBUI_PORT") if env.get("WEBUI_PORT") else DEFAULT_PORT)
    lang_where = "--lang" if lang else ("SWIFTLIKE_UI_LANG" if env.get("SWIFTLIKE_UI_LANG") else "SWIFT_UI_LANG")
    lang = (lang or env.get("SWIFTLIKE_UI_LANG") or env.get("SWIFT_UI_LANG") or "en").lower()
    if lang not in LANGS:
        raise SwiftlikeError(f"{lang_where} {lang}: use en or zh")
    pair = _auth(auth, "--auth") if auth else (_auth(env["WEBUI_AUTH"], "WEBUI_AUTH") if env.get("WEBUI_AUTH")
                                               else None)
    if pair is None and not is_loopback(host):
        raise SwiftlikeError(f"--host {host} is reachable from the network, and the web UI can start training and "
                             f"read and write files: pass --auth USER:PASSWORD (or set WEBUI_AUTH), or serve on "
                             f"127.0.0.1")
    return UISettings(host=host, port=port, lang=lang, auth=pair, output_dir=output_dir or "output")
