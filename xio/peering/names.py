"""The one rule for an app's name, and the length of the other names a node carries.

Theory of operation. An app's name is the first segment of a mesh path
(``/<app>/<path>``, ``/~<node>/<app>/<path>``), so the node that hosts an app, the record that
advertises it, the ``req`` frame that asks for it and the router that reads it from a URL must
all agree on what a name is; one function here says it for all of them. A name is 1..64
characters: an ASCII letter or digit, then letters, digits, ``_``, ``.`` or ``-``. That keeps
it one path segment that needs no percent-encoding, and leaves the names starting with ``_``
(the node's own ``/_xio``) and ``~`` (a pinned node) free of apps. Node display names and
methods are free text up to ``MAX_NAME`` characters.

Pure: no imports beyond the standard library's ``re``.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters of a node's display name, a method or a record ``ext`` key.
MAX_NAME = 255
#: Characters of an app's name.
MAX_APP_NAME = 64
#: What an app's name may be (see the module docstring); matched whole.
APP_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_APP_NAME - 1}}}")
#: The rule in words, for error messages.
APP_NAME_RULE = (
    f"1..{MAX_APP_NAME} characters: a letter or digit, then letters, digits, '_', '.', '-'"
)


def is_app_name(value: Any) -> bool:
    """Return whether ``value`` is a str that can name an app."""
    return type(value) is str and APP_NAME.fullmatch(value) is not None
