"""Torch at the edges: aiolit's datasets are torch ``IterableDataset``s without importing torch.

Importing torch costs about 2 s of CPU, which an async service or an ingestion job that never
builds a ``DataLoader`` should not pay. So :class:`IterableBase` is a plain class, and every
class built on it is registered as a virtual subclass of ``torch.utils.data.IterableDataset`` as
soon as torch's data package is imported (now, if it already is): ``isinstance(ds,
IterableDataset)`` is then true, which is all ``DataLoader`` checks to treat a dataset as
iterable-style. Type checkers see the real base (``dataset.py`` imports it under
``TYPE_CHECKING``).

:func:`worker_info` is ``torch.utils.data.get_worker_info()`` without the import: a process that
has not imported torch is not a ``DataLoader`` worker.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T_co = TypeVar("T_co", covariant=True)

_DATA = "torch.utils.data"
_registered: list[type] = []
_hooked = False
_lock = threading.Lock()


class IterableBase(Generic[T_co]):
    """A base class that torch's ``IterableDataset`` adopts when torch is imported."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("aiolit."):  # subclasses of these are covered by them
            _register(cls)

    def __add__(self, other: Any) -> Any:
        from torch.utils.data import ChainDataset

        return ChainDataset([self, other])  # type: ignore[list-item]


def worker_info() -> Any | None:
    """``torch.utils.data.get_worker_info()``, or None when torch is not imported."""
    data = sys.modules.get(_DATA)
    return None if data is None else data.get_worker_info()


def is_torch_iterable(obj: object) -> bool:
    """Whether ``obj`` is a torch ``IterableDataset`` (False when torch is not imported)."""
    data = sys.modules.get(_DATA)
    return data is not None and isinstance(obj, data.IterableDataset)


def _register(cls: type) -> None:
    global _hooked
    with _lock:
        _registered.append(cls)
        data = sys.modules.get(_DATA)
        if data is not None and hasattr(data, "IterableDataset"):
            data.IterableDataset.register(cls)
        elif not _hooked:
            _hooked = True
            sys.meta_path.insert(0, _Finder(_DATA, _adopt))


def _adopt(module: types.ModuleType) -> None:
    with _lock:
        for cls in _registered:
            module.IterableDataset.register(cls)


class _Finder(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after the module ``name`` is first executed (a post-import hook)."""

    def __init__(self, name: str, then: Callable[[types.ModuleType], None]) -> None:
        self.name, self.then = name, then

    def find_spec(
        self, fullname: str, path: Any, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        sys.meta_path.remove(self)  # once: the module is about to exist
        spec.loader = _Loader(spec.loader, self.then)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any, then: Callable[[types.ModuleType], None]) -> None:
        self.inner, self.then = inner, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self.inner.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.inner  # the module looks as if imported the normal way
        self.inner.exec_module(module)
        self.then(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.inner, name)
