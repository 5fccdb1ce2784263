"""The `swiftlike` command line. Subcommands live in small modules; heavy imports happen inside commands."""
from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..registry.errors import SwiftlikeError
from .quickstart import QUICK_START


class Group(click.Group):
    """Turns errors into one clear line and a non-zero exit; SWIFTLIKE_DEBUG=1 shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130)
        except BrokenPipeError:
            _quiet_closed_pipe()
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


HELP = f"""Fine-tune open LLMs: LoRA, QLoRA, DoRA, full and freeze tuning through a plugin registry.

\b
Quick start (CPU, offline, the embedded SmolLM2-135M-Instruct):
  {QUICK_START}
"""


@click.group(cls=Group, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="swiftlike")
def cli():
    pass


def _add_builtin_commands() -> None:
    from . import adapter_cmds, eval_cmds, plugin_cmds, registry_cmds, serve_cmds, template_cmds, train_cmds, \
        webui_cmds

    for command in (*registry_cmds.GROUPS, *plugin_cmds.GROUPS, template_cmds.template, *train_cmds.COMMANDS,
                    *eval_cmds.COMMANDS, adapter_cmds.adapter, serve_cmds.serve, *webui_cmds.COMMANDS):
        cli.add_command(command)


def _add_plugin_commands() -> None:
    from ..registry.loader import get_plugin_manager, report

    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as err:
            report(impl.plugin_name, err, "in register_commands")


_add_builtin_commands()


def _quiet_closed_pipe():
    """The reader went away (`swiftlike models list | head -1`): stop quietly, as `cat` would. Whatever is still
    buffered for stdout goes to /dev/null, so the interpreter's final flush cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise click.exceptions.Exit(0)


def main(argv=None):
    import logging

    # bitsandbytes warns on every CPU import that an optional kernels package is missing; it changes nothing here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # With `kernels` installed (transformers >= 5.25 requires it), that import asks the Hub for a CPU kernel and,
    # offline, `kernels` warns that it skips its publisher check; the import goes on without the kernel.
    logging.getLogger("kernels").setLevel(logging.ERROR)
    _add_plugin_commands()
    try:
        return cli.main(args=argv, prog_name="swiftlike")
    finally:
        try:
            sys.stdout.flush()  # a reader that closed the pipe shows here, while it can still be handled quietly
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
