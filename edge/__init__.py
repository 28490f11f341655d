"""The NATS edge: connections, publishing, the log reader, credentials.

Importing it first (``hive/__init__.py`` does) spares every process two libraries' optional
extras that HiveMind never uses, about 150 ms of a command's start: nats-py's websocket
transport (aiohttp) and structlog's rich tracebacks (``hive.logs`` renders with
``plain_traceback`` and no locals). Each is hidden only while its importer loads, and only
when something imports it: a read command that never loads nats-py (``hive.reads``) pays
nothing for it. A later ``import aiohttp`` (``hive web``, ``/health``) or ``rich.traceback``
loads as usual.
"""

import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# the module whose first load hides the others while it runs
_HIDE = {"nats.aio.transport": ("aiohttp",), "structlog": ("rich.traceback", "rich.pretty")}


@contextmanager
def _hidden(*names: str) -> Iterator[None]:
    hide = [n for n in names if n not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        yield
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


class _Hiding:  # a loader (importlib.abc would cost 10 ms of imports: duck typing is enough)
    def __init__(self, loader: Any, hide: tuple[str, ...]) -> None:
        self.loader = loader
        self.hide = hide

    def __getattr__(self, name: str) -> object:  # get_source, is_package, ...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _hidden(*self.hide):
            self.loader.exec_module(module)


class _Finder:  # a meta path finder
    """Finds nothing itself: wraps the real loader of a module in ``_HIDE``, once."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        hide = _HIDE.pop(name, None)
        if hide is None:
            return None
        if not _HIDE:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Hiding(spec.loader, hide)
        return spec


for _name in [n for n in _HIDE if n.split(".")[0] in sys.modules]:
    del _HIDE[_name]  # loaded before us: too late to hide anything
if _HIDE:
    sys.meta_path.insert(0, _Finder())
