"""Pool sources: datasets `make-pool` turns into DataComp-format pools, one module each (see base.Source).

Adding one: write sfcomp/sources/<name>.py with a `Source` subclass, and add one `register(...)` line below.
A source outside sfcomp is named `MODULE:ATTR` instead (`make-pool --source mypkg.data:MySource`): the module
is imported and ATTR, a Source subclass or instance, is used as it is, without registering.
"""
from __future__ import annotations

import importlib

from ..errors import BadInputError
from .base import Items, Source
from .fashion_mnist import FashionMNIST
from .folder import FolderSource
from .tuxpaint import TuxPaintSource

SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    if not source.name or source.name in SOURCES:
        raise ValueError(f"a pool source needs a new, non-empty name (got {source.name!r})")
    SOURCES[source.name] = source
    return source


register(FashionMNIST())
register(FolderSource())
register(TuxPaintSource())
DEFAULT_SOURCE = FashionMNIST.name


def get_source(spec: str | Source) -> Source:
    """The source a `--source` value names: a registered name, or `MODULE:ATTR` (a Source subclass or
    instance). A bad name is a BadInputError naming the option."""
    if isinstance(spec, Source):
        return spec
    if spec in SOURCES:
        return SOURCES[spec]
    choices = ", ".join(sorted(SOURCES))
    if ":" not in spec:
        raise BadInputError(None, f"--source must be one of {choices} or MODULE:ATTR, got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise BadInputError(None, f"--source {spec}: cannot load it ({type(e).__name__}: {e})") from None
    if isinstance(obj, type) and issubclass(obj, Source):
        obj = obj()
    if not isinstance(obj, Source):
        raise BadInputError(None, f"--source {spec}: {type(obj).__name__} is not a sfcomp.sources.Source")
    return obj


__all__ = ["DEFAULT_SOURCE", "Items", "SOURCES", "Source", "get_source", "register"]
