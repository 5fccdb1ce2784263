"""Click options generated from an arguments dataclass, with ms-swift's command-line conventions:
`--flag value` booleans (`--add_output_dir_suffix False`, also `--no-flag`), bare boolean flags (`--use_dora`),
space-separated lists (`--dataset a.jsonl b.jsonl`), and every field's alias spellings."""
from __future__ import annotations

import dataclasses
import difflib
import typing

import click


def _base_type(f):
    tp = f.type if not isinstance(f.type, str) else eval(f.type, vars(typing) | {"Optional": typing.Optional})
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and args else tp


def _names(f) -> list[str]:
    names = [f.name, *f.metadata.get("aliases", ())]
    out = []
    for n in names:
        out.append(f"--{n}")
        if "_" in n:
            out.append(f"--{n.replace('_', '-')}")
    return out


def list_option_names(cls) -> set[str]:
    return {n for f in dataclasses.fields(cls) if _base_type(f) is list for n in _names(f)}


def bool_option_names(cls) -> dict[str, str]:
    """{--name and alias spellings: the primary --name} of boolean fields (for `--no-name`)."""
    return {n: f"--{f.name}" for f in dataclasses.fields(cls) if _base_type(f) is bool for n in _names(f)}


def options_from(cls, ignored=(), skip=()):
    """Decorator adding one click option per dataclass field (and hidden no-op options for `ignored`)."""
    def decorate(func):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            tp = _base_type(f)
            default = f.default if f.default is not dataclasses.MISSING else None
            help_ = f.metadata.get("help", "")
            if tp is bool:
                opt = click.option(*_names(f), f.name, type=click.BOOL, is_flag=False, flag_value=True,
                                   default=default, show_default=default is not None, help=help_)
            elif tp is list:
                opt = click.option(*_names(f), f.name, multiple=True, help=help_)
            else:
                ptype = {int: click.INT, float: click.FLOAT}.get(tp, click.STRING)
                opt = click.option(*_names(f), f.name, type=ptype, default=default,
                                   show_default=default is not None, help=help_)
            func = opt(func)
        for name in sorted(ignored):
            func = click.option(f"--{name}", f"_ignored_{name}", hidden=True, is_flag=False, flag_value="true",
                                default=None)(func)
        return func
    return decorate


def fields_of(cls, kwargs: dict) -> dict:
    """The entries of click `kwargs` that are fields of `cls` (list options: lists; unset lists left out)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in kwargs:
            continue
        value = kwargs[f.name]
        if _base_type(f) is list:
            if not value:
                continue
            value = list(value)
        values[f.name] = value
    return values


def ignored_given(kwargs: dict) -> list[str]:
    return sorted(k[len("_ignored_"):] for k, v in kwargs.items() if k.startswith("_ignored_") and v is not None)


def warn_ignored(names) -> None:
    if names:
        click.echo(f"note: ignoring option(s) that swiftlike decides itself: {', '.join('--' + n for n in names)}",
                   err=True)


def build(cls, kwargs: dict):
    """click kwargs -> dataclass instance (list options: multiple values, defaults kept when not given)."""
    warn_ignored(ignored_given(kwargs))
    return cls(**fields_of(cls, kwargs))


class ListArgsCommand(click.Command):
    """Expands `--opt a b c` into `--opt a --opt b --opt c` for list-valued options and `--no-flag` into `--flag
    false` before click parses; unknown options are suggested only among the options shown in --help."""

    list_options: set[str] = set()
    bool_options: dict[str, str] = {}

    def parse_args(self, ctx, args):
        out, current = [], None
        for token in args:
            if token.startswith("-") and len(token) > 1 and not _is_number(token):
                name = token.split("=", 1)[0]
                negated = _negated(name, self.bool_options)
                if negated and "=" not in token:
                    out.extend([negated, "false"])
                    current = None
                    continue
                current = name if name in self.list_options and "=" not in token else None
                out.append(token)
            elif current is not None and out and out[-1] != current:
                out.extend([current, token])
            else:
                out.append(token)
        try:
            return super().parse_args(ctx, out)
        except click.NoSuchOption as err:
            visible = [o for p in self.get_params(ctx) if isinstance(p, click.Option) and not p.hidden
                       for o in p.opts if o.startswith("--")]
            hint = difflib.get_close_matches(err.option_name, visible, n=3)
            raise click.NoSuchOption(err.option_name, possibilities=hint, ctx=ctx) from None


def _negated(name: str, bools: dict) -> str | None:
    for prefix in ("--no-", "--no_"):
        if name.startswith(prefix):
            return bools.get("--" + name[len(prefix):])
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def command_for(cls, name: str, **kw):
    """A click command class for `cls` whose list options accept space-separated values and booleans `--no-X`."""
    klass = type(f"{cls.__name__}Command", (ListArgsCommand,),
                 {"list_options": list_option_names(cls), "bool_options": bool_option_names(cls)})
    return click.command(name, cls=klass, **kw)
