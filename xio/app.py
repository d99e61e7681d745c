"""Apps: a root resource whose ``www`` subtree is public, with ``main()`` to serve it.

``xio.app(__name__)`` in a script names the app after the script (or its folder, for
``app.py``) and serves a ``www/`` folder beside it as static files. Over HTTP only
``www`` answers: ``GET /items`` is ``www/items``; every other subtree (``etc``,
``services``, ...) is reachable in-process only. The app is a WSGI callable too, so
gunicorn or uwsgi can host it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .constants import PUBLIC
from .request import Request, Response
from .resource import Resource
from .server import DEFAULT_MAX_BODY, WSGIApp
from .threads import check_threads


def _name_and_folder(module_name: str | None) -> tuple[str, Path | None]:
    module = sys.modules.get(module_name) if module_name else None
    file = getattr(module, "__file__", None)
    if not file:
        return module_name or "app", None
    path = Path(file).resolve()
    if module_name != "__main__":
        return module_name.rsplit(".", 1)[-1], path.parent
    name = path.stem
    if name in ("app", "main", "__main__"):
        name = path.parent.name or name
    return name, path.parent


class App(Resource):
    """A root resource with a public ``www`` subtree, served by ``main()``."""

    def __init__(
        self, name: str | None = None, folder: str | Path | None = None, *, threads: int = 0
    ) -> None:
        super().__init__("")
        self.app_name = name or "app"
        self.threads = check_threads(threads)
        self.folder = Path(folder) if folder else None
        self.max_body = DEFAULT_MAX_BODY
        self._wsgi: WSGIApp | None = None
        if self.folder is not None and (self.folder / PUBLIC).is_dir():
            self.serve_folder(PUBLIC, self.folder / PUBLIC)

    def handle_public(self, req: Request) -> Response:
        """Answer a request from outside: its path is below ``www``."""
        req.url_path = f"{PUBLIC}/{req.url_path.lstrip('/')}"
        return self.handle(req)

    def __call__(self, environ: dict, start_response):
        """Serve the app as a WSGI application (``www`` at ``/``)."""
        wsgi = self._wsgi
        if wsgi is None:
            wsgi = self._wsgi = WSGIApp(self.handle_public)
        wsgi.max_body = self.max_body  # read per request: the app's owner may change it later
        return wsgi(environ, start_response)

    def main(self, argv: list[str] | None = None) -> int:
        """Serve this app from the command line (``--host``, ``--port``, TLS); see ``--help``."""
        from .appmain import run  # the server side is imported only when serving

        return run(self, argv)

    def __repr__(self) -> str:
        return f"<App {self.app_name!r}>"


def app(name: str | None = None, folder: str | Path | None = None, *, threads: int = 0) -> App:
    """Return a new app: ``xio.app(__name__)``, ``xio.app('name')`` or ``xio.app()``.

    Given a module's ``__name__``, the app takes its name from the module and serves the
    ``www/`` folder beside it as static files. ``threads=N`` runs its handlers on N threads
    of their own when a node hosts it, so that a handler busy computing does not stall the
    node (see ``xio.threads``); 0, the default, runs them on the node's hub.
    """
    found_name, found_folder = _name_and_folder(name)
    if name and name not in sys.modules:
        found_name, found_folder = name, None
    return App(found_name, folder if folder is not None else found_folder, threads=threads)


def resource() -> Resource:
    """Return a new, empty resource tree."""
    return Resource()
