"""The version of xio, in a module of its own that imports nothing.

Every module that needs the version (the node's record, ``/_xio/node``, ``--version``, the
client's User-Agent, setup.cfg) reads it here, so none has to import the ``xio`` package,
whose ``__init__`` imports nearly everything.
"""

__version__ = "0.1.0"
