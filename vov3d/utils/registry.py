"""A name -> class table whose look-ups ignore case, as dataset names do in PySlowFast."""
import contextlib
import difflib
from typing import Callable, Dict, Iterator, List, Type

from vov3d.utils.errors import UserError


class UnknownNameError(UserError, KeyError):
    """A name no class is registered under; the message lists the names and the closest one."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote the message


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Type] = {}

    def register(self, cls: Type = None, *, name: str = None) -> Callable:
        """Use as `@REGISTRY.register()` or `@REGISTRY.register(name="...")`."""
        def add(obj: Type) -> Type:
            key = (name or obj.__name__).lower()
            if key in self._entries and self._entries[key] is not obj:
                raise KeyError(f"{self.kind} '{name or obj.__name__}' is registered twice.")
            self._entries[key] = obj
            return obj
        return add(cls) if cls is not None else add

    def get(self, name: str) -> Type:
        try:
            return self._entries[name.lower()]
        except KeyError:
            msg = f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}."
            close = difflib.get_close_matches(name.lower(), list(self._entries), n=1, cutoff=0.6)
            if close:
                cls_name = self._entries[close[0]].__name__
                msg += f" Did you mean '{cls_name if cls_name.lower() == close[0] else close[0]}'?"
            raise UnknownNameError(msg) from None

    def names(self) -> List[str]:
        return sorted(obj.__name__ for obj in self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    @contextlib.contextmanager
    def scoped(self) -> Iterator["Registry"]:
        """Entries registered inside the `with` block are removed when it ends, so tests can
        register toy classes without leaving them in the package's registry."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)
