"""`--external_plugins FILE.py …` (ms-swift's option): Python files loaded before a run, each into the registry.

A file may hold swiftlike hooks (`@swiftlike.hookimpl def register_rewards(register): …`, or any other `register_*`
hook), or reward functions written for ms-swift, as its GRPO examples ship them:

    from swift.rewards import ORM, orms          # ms-swift 4 (3.x: from swift.plugin import ORM, orms)

    class CountdownORM(ORM):
        def __call__(self, completions, target, nums, **kwargs) -> List[float]: ...

    orms['external_countdown'] = CountdownORM

Those two ms-swift modules are stood in for while the file runs (ORM, AsyncORM and an empty `orms`; ms-swift need not
be installed and is not imported when it is), and each `orms` entry becomes a reward function of that name. Any other
`swift.*` import is a one-line error: ms-swift's datasets, templates and models have swiftlike hooks instead."""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import sys
import types
from pathlib import Path

from ..registry import SwiftlikeError
from ..registry.hookspecs import hookimpl

_STOOD_IN = ("swift", "swift.plugin", "swift.rewards")


class ORM:
    """ms-swift's synchronous reward base class: `__call__(completions, **row_columns) -> list[float]`."""

    def __init__(self, args=None, **kwargs):
        self.args = args

    def __call__(self, **kwargs):
        raise NotImplementedError


class AsyncORM(ORM):
    """ms-swift's asynchronous reward base class: `async __call__(…)`."""

    async def __call__(self, **kwargs):
        raise NotImplementedError


def _stand_ins(orms: dict) -> dict:
    root = types.ModuleType("swift")
    root.__path__ = []  # a package with nothing else in it: `import swift.llm` fails as not found
    modules = {"swift": root}
    for name in ("plugin", "rewards"):
        module = types.ModuleType(f"swift.{name}")
        module.ORM, module.AsyncORM, module.orms = ORM, AsyncORM, orms
        setattr(root, name, module)
        modules[f"swift.{name}"] = module
    return modules


def as_reward(name: str, entry):
    """An `orms` entry (a class, called as ms-swift does: made once with args=None, then called with the
    completions and the row's columns) as a swiftlike reward function; an async one is run to completion."""
    made = []

    def reward(completions, **columns):
        if not made:
            made.append(entry(args=None) if inspect.isclass(entry) else entry)
        out = made[0](completions, **columns)
        if inspect.isawaitable(out):
            out = asyncio.run(out)
        return [float("nan") if r is None else float(r) for r in out]

    reward.__name__ = name
    return reward


class _OrmPlugin:
    def __init__(self, orms: dict, path: Path):
        self.orms, self.path = dict(orms), path

    @hookimpl
    def register_rewards(self, register):
        for name, entry in self.orms.items():
            register(name, func=as_reward(name, entry),
                     summary=f"ms-swift reward {getattr(entry, '__name__', name)} from {self.path.name}")


def _execute(path: Path, orms: dict):
    """Run the file as a module with ms-swift's reward modules stood in for; errors as `FILE:LINE: what`."""
    saved = {name: sys.modules.get(name) for name in _STOOD_IN}
    sys.modules.update(_stand_ins(orms))
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"swiftlike_external_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise SwiftlikeError(f"--external_plugins {path}:{err.lineno}: {err.msg}") from None
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "swift":
            raise SwiftlikeError(f"--external_plugins {path}: imports {err.name}; swiftlike stands in for ms-swift's "
                                 f"reward modules only (from swift.rewards / swift.plugin import ORM, orms) — "
                                 f"register datasets, templates and models with swiftlike's hooks "
                                 f"(README: Plugins)") from None
        raise SwiftlikeError(f"--external_plugins {path}: {err}") from None
    except Exception as err:  # the file's own code failed: where, and what
        line = next((f.lineno for f in reversed(_frames(err)) if f.filename == str(path)), None)
        where = f"{path}:{line}" if line else str(path)
        raise SwiftlikeError(f"--external_plugins {where}: {type(err).__name__}: {err}") from None
    finally:
        for name, module_before in saved.items():
            if module_before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module_before
    return module


def _frames(err: BaseException) -> list:
    import traceback

    return traceback.extract_tb(err.__traceback__)


def load_external_plugins(paths) -> list[str]:
    """Load each file once per process into the plugin manager (and rebuild the registry); returns the plugin names.
    A missing file, a file that fails, or one that adds nothing is a one-line error."""
    from ..registry.core import reset_registry
    from ..registry.loader import get_plugin_manager

    pm = get_plugin_manager()
    names = []
    for given in paths or []:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise SwiftlikeError(f"--external_plugins {given}: no such file")
        name = f"external:{path}"
        names.append(name)
        if pm.has_plugin(name) or pm.has_plugin(f"{name}:orms"):
            continue
        orms: dict = {}
        module = _execute(path, orms)
        hooks = [attr for attr in vars(module).values()
                 if callable(attr) and hasattr(attr, "swiftlike_impl") and getattr(attr, "__module__", None)
                 == module.__name__]
        if not orms and not hooks:
            raise SwiftlikeError(f"--external_plugins {given}: registers nothing (no @swiftlike.hookimpl "
                                 f"register_* hook, no orms['NAME'] = ORM class)")
        bad = [k for k, v in orms.items() if not callable(v)]
        if bad:
            raise SwiftlikeError(f"--external_plugins {given}: orms[{bad[0]!r}] is not an ORM class or a function")
        if hooks:
            pm.register(module, name=name)
        if orms:
            pm.register(_OrmPlugin(orms, path), name=f"{name}:orms")
    if names:
        reset_registry()
    return names
