"""The `swiftlike` command line. Subcommands live in small modules; heavy imports happen inside commands."""
from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..registry.errors import SwiftlikeError


class Group(click.Group):
    """Turns errors into one clear line and a non-zero exit; SWIFTLIKE_DEBUG=1 shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130)
        except Exception as err:
            if os.environ.get("SWIFTLIKE_DEBUG"):
                raise
            if isinstance(err, SwiftlikeError):
                msg = str(err)
            else:
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                msg = f"{type(err).__name__}: {first} (SWIFTLIKE_DEBUG=1 shows the traceback)"
            click.echo(f"Error: {msg}", err=True)
            raise click.exceptions.Exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="swiftlike")
def cli():
    """Fine-tune open LLMs: LoRA, QLoRA, DoRA, full and freeze tuning through a plugin registry.

    \b
    Quick start (CPU, offline, the embedded SmolLM2-135M-Instruct):
      swiftlike sft --model_type smollm2-135m-instruct --dataset self-cognition#200 \\
                    --model_name Nova --model_author 'Orbit Labs'
    """


def _add_builtin_commands() -> None:
    from . import plugin_cmds, registry_cmds

    for group in registry_cmds.GROUPS + plugin_cmds.GROUPS:
        cli.add_command(group)
    for module, attr in (("template_cmds", "template"), ("train_cmds", "COMMANDS"), ("adapter_cmds", "adapter"),
                         ("serve_cmds", "serve")):
        try:
            mod = __import__(f"swiftlike.cli.{module}", fromlist=[attr])
        except ModuleNotFoundError as err:
            if err.name == f"swiftlike.cli.{module}":
                continue  # command group not built yet
            raise
        items = getattr(mod, attr)
        for item in items if isinstance(items, (list, tuple)) else [items]:
            cli.add_command(item)


def _add_plugin_commands() -> None:
    from ..registry.loader import get_plugin_manager, report

    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as err:
            report(impl.plugin_name, err, "in register_commands")


_add_builtin_commands()


def main(argv=None):
    import logging

    # bitsandbytes warns on every CPU import that an optional kernels package is missing; it changes nothing here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    _add_plugin_commands()
    return cli.main(args=argv, prog_name="swiftlike")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
