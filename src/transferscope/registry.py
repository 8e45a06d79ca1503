"""Named classes registered by a decorator (strategies, executors), looked up with a
did-you-mean error for unknown names."""

from __future__ import annotations

from transferscope.errors import InputError
from transferscope.metrics._registry import suggest


class Registry:
    def __init__(self, kind: str, plural: str):
        self.kind, self.plural = kind, plural
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: ``@registry.register("name")``; sets ``cls.name``."""

        def decorate(cls):
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            raise InputError(f"Unknown {self.kind} {name!r}{suggest(name, self._classes)} "
                             f"({self.plural}: {', '.join(self.names())})")
        return self._classes[name]
