"""The pipeline's own errors: what went wrong decides who is told and whether a retry can help."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is wrong; the message names the setting and the fix. Never retried (exit 2)."""


class FileRejected(Exception):
    """This file cannot be loaded (missing, wrong header, not text, changed...). Only this file
    fails, at once and without retries; the other files of the run still load."""


class FileChanged(FileRejected):
    """The file changed while it was being loaded; nothing of it was committed."""
