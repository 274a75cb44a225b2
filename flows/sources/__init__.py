"""Extract stage: one class per source behind one protocol (flows/sources/base.py).

    plan(request)  the run's files by name, fetching none of them: a FileRequest each
    fetch(file)    only that file, where this process runs (its own Job, or a subflow's thread)

Adding a source is adding a module here with one `Source` subclass and naming it below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, get_args

from flows.contract import SourceName

if TYPE_CHECKING:
    from flows.settings import Settings
    from flows.sources.base import Source

# name -> "module:class", imported when used (the CLI's --help imports none of them)
_CLASSES: dict[str, str] = {
    "sample": "flows.sources.sample:SampleSource",
    "local": "flows.sources.local:LocalSource",
    "url": "flows.sources.url:UrlSource",
    "kaggle": "flows.sources.kaggle:KaggleSource",
}
SOURCES: tuple[str, ...] = get_args(SourceName)
assert set(SOURCES) == set(_CLASSES), "every SourceName has its class"


def source_for(name: str, settings: Settings) -> Source:
    module, _, cls = _CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(settings)
