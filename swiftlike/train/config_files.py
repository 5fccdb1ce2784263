"""Training arguments from a config file: `swiftlike sft --config run.yaml` (or `swiftlike sft run.yaml`).

A file holds swiftlike's option names or their ms-swift/HF spellings (a run's own args.json is one: re-running it
reproduces the run), or a LLaMA-Factory training YAML (translated by swiftlike.train.llamafactory). Keys that are
not options are one error listing all of them; options swiftlike decides itself are named in a warning. Values
given on the command line (`--flag value` or LLaMA-Factory's `key=value`) override the file.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from ..registry import SwiftlikeError

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# keys a run's args.json carries besides the options: what was resolved (informational on re-read)
RESOLVED_KEYS = {"model_dir", "stage"}


def read_config(path) -> dict:
    """The mapping in a YAML or JSON file; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SwiftlikeError(f"--config {path}: no such file")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise SwiftlikeError(f"--config {path}: expected a .yaml, .yml or .json file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SwiftlikeError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise SwiftlikeError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SwiftlikeError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def config_values(cls, data: dict, *, source: str, stages) -> tuple[dict, list[str]]:
    """({field: value}, ignored option names) for the keys of a config mapping; `stages`: the stage names the
    command trains (sft; pt; the rlhf types)."""
    from .llamafactory import is_llamafactory, translate

    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    if is_llamafactory(data):
        data, ignored = translate(data, source=source, stages=stages)
    else:
        ignored = []
        if data.get("stage") not in (None, *stages):
            raise SwiftlikeError(f"{source}: stage {data['stage']!r}; this command trains {', '.join(stages)}")
    return _by_field(cls, data, source, ignored)


def parse_overrides(tokens, *, source="command line") -> dict:
    """LLaMA-Factory's `key=value` overrides -> {key: value} (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise SwiftlikeError(f"{source}: {token!r} is neither a config file ({', '.join(CONFIG_SUFFIXES)}) nor "
                                 f"key=value")
        try:
            out[key.lstrip("-")] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.lstrip("-")] = value
    return out


def _aliases(cls) -> dict[str, str]:
    table = {}
    for f in dataclasses.fields(cls):
        for name in (f.name, *f.metadata.get("aliases", ())):
            table[name] = f.name
            table[name.replace("_", "-")] = f.name
    return table


def _by_field(cls, data: dict, source: str, ignored: list) -> tuple[dict, list[str]]:
    from .arguments import IGNORED_FLAGS

    names = _aliases(cls)
    types = {f.name: f for f in dataclasses.fields(cls)}
    values, unknown = {}, []
    for key, value in data.items():
        key = str(key)
        if key in names:
            field = types[names[key]]
            values[field.name] = coerce(field, value, f"{source}: {key}")
        elif key.replace("-", "_") in IGNORED_FLAGS:
            ignored.append(key.replace("-", "_"))
        elif key not in RESOLVED_KEYS:
            unknown.append(key)
    if unknown:
        raise SwiftlikeError(f"{source}: unknown option(s) {', '.join(sorted(unknown))}; see `swiftlike "
                             f"sft --help` for the names swiftlike takes")
    return values, ignored


def _base_type(f):
    tp = f.type if not isinstance(f.type, str) else eval(f.type, vars(typing) | {"Optional": typing.Optional})
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (args[0] if typing.get_origin(tp) is typing.Union and args else tp), type(None) in typing.get_args(tp)


def coerce(field, value, where: str):
    """A config value as the field's type: YAML reads `5e-4` as text and `1` where a float is meant."""
    tp, optional = _base_type(field)
    if value is None:
        if optional or tp is list:
            return [] if tp is list else None
        raise SwiftlikeError(f"{where}: a value is required")
    try:
        if tp is list:
            if isinstance(value, (list, tuple)):
                return [str(v) if not isinstance(v, (dict, list)) else v for v in value]
            return [str(value)]
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            number = float(value) if not isinstance(value, bool) else 0.5
            if not number.is_integer():
                raise ValueError
            return int(number)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                return json.dumps(value)  # e.g. --columns given as a mapping
            return str(value)
    except (TypeError, ValueError):
        raise SwiftlikeError(f"{where}: {value!r} is not a valid {tp.__name__}") from None
    return value


def merge_arguments(cls, *, config=None, overrides=(), cli: dict | None = None, stage="sft"):
    """An arguments instance from a config file, `key=value` overrides and command-line values, later winning.
    Returns (instance, ignored option names)."""
    data = read_config(config) if config else {}
    # key=value overrides join the file's mapping (later keys win), so they take the file's dialect
    data.update(parse_overrides(overrides))
    values, ignored = config_values(cls, data, source=str(config or "command line"), stages=stage) if data \
        else ({}, [])
    values.update(cli or {})
    return cls(**values), sorted(set(ignored))
