"""Serve a written viewer page over HTTP (loopback by default) for browsers that restrict file:// pages."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.parse
from pathlib import Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the terminal for our own messages
        pass


def make_server(page: Path, *, host: str = "127.0.0.1", port: int = 8000,
                root: Path | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """An HTTP server for the folder `root` (default: the page's folder); returns (server, URL of the page).

    Only files under `root` are served (SimpleHTTPRequestHandler resolves '..' inside it). `port` 0 picks a
    free port.
    """
    page = page.resolve()
    root = (root or page.parent).resolve()
    rel = page.relative_to(root).as_posix()
    handler = functools.partial(_QuietHandler, directory=os.fspath(root))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{server.server_address[1]}/{urllib.parse.quote(rel)}"
    return server, url


def serve_viewer(page: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                 root: str | os.PathLike | None = None,
                 background: bool = False) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve `page` (and its side files / JPEG tree under `root`) until interrupted, or in a thread.

    Returns (server, url); with `background=True` the server runs in a daemon thread (call server.shutdown()).
    """
    server, url = make_server(Path(page), host=host, port=port, root=Path(root) if root else None)
    if background:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, url
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return server, url
