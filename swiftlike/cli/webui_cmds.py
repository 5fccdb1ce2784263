"""`swiftlike web-ui` (alias `webui`): train, chat, compare, publish and export from the browser."""
from __future__ import annotations

import copy

import click


@click.command("web-ui", short_help="Train, chat, compare and publish adapters from the browser.")
@click.option("--host", default=None, help="Interface to listen on (default: $WEBUI_SERVER, else 127.0.0.1). A "
              "non-loopback host needs --auth.")
@click.option("--port", default=None, type=int, help="Port (default: $WEBUI_PORT, else 7860).")
@click.option("--lang", default=None, type=click.Choice(["en", "zh"]),
              help="Label language (default: $SWIFTLIKE_UI_LANG or $SWIFT_UI_LANG, else en).")
@click.option("--auth", default=None, metavar="USER:PASSWORD",
              help="Require this login (default: $WEBUI_AUTH); required off loopback.")
@click.option("--output_dir", "--output-dir", "output_dir", default=None,
              help="Where runs started here go and where runs are looked for (default: output).")
@click.option("--share", is_flag=True, hidden=True, help="Refused: gradio public share links.")
def web_ui(host, port, lang, auth, output_dir, share):
    """Open the web UI: the Train tab runs `swiftlike sft|pt|rlhf` as its own process (the exact command is shown),
    Chat and Compare talk to checkpoints and installed adapters, Adapters is the marketplace, Export merges and
    exports. Needs `pip install -e ".[webui]"`."""
    from ..webui import launch, resolve_settings

    settings = resolve_settings(host=host, port=port, lang=lang, auth=auth, share=share, output_dir=output_dir)
    try:
        import gradio  # noqa: F401
    except ImportError:
        from ..registry import SwiftlikeError

        raise SwiftlikeError('the web UI needs gradio: pip install -e ".[webui]" (or pip install "gradio>=6,<7")') \
            from None
    launch(settings)


webui_alias = copy.copy(web_ui)
webui_alias.name = "webui"
webui_alias.hidden = True

COMMANDS = [web_ui, webui_alias]
