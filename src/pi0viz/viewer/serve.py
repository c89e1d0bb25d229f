"""Serve a written viewer page over HTTP (loopback by default) for browsers that restrict file:// pages.

The server answers only what the page loads, read from the page's own metadata: the page, its side files
(`<stem>_data/<chunk>.js`) and, when the page shows an attention_viz tree, the tree's JPEGs
(`inference_timestep_N/diffusion_timestep_D/action_token_A/layer_L/<name>.jpg`). Nothing else of the folder is
readable: no listing, no other file, no `..` or encoded `%2e%2e`, no symlink that leaves the page's folder or the
tree. Requests whose Host header is not a loopback name with the served port (127.0.0.1, localhost, [::1], or the
`--host` given) are refused, so a web page that rebinds its DNS name to 127.0.0.1 cannot read the page.
"""

from __future__ import annotations

import http
import http.server
import json
import os
import posixpath
import re
import shutil
import threading
import urllib.parse
from pathlib import Path
from typing import Any

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_META = re.compile(r'<script type="application/json" id="pi0viz-meta">(.*?)</script>', re.S)
_SIDE_FILE = re.compile(r"[A-Za-z0-9_]+\.js")  # viewer.page names side files by chunk id
# What the page's treePath() builds: integers and a file name of viewer.build's _SAFE_FILE pattern.
_TREE_FILE = re.compile(r"inference_timestep_\d+/diffusion_timestep_\d+/action_token_\d+/layer_\d+/"
                        r"[A-Za-z0-9][A-Za-z0-9_.\-]*\.jpe?g")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".jpg": "image/jpeg",
          ".jpeg": "image/jpeg"}


class PageFiles:
    """The allow-list of one page: URL path -> file, nothing else.

    Args:
        page: the written viewer page (its metadata names the side files and the tree it loads).
        root: the served folder (the page's, or the common folder of the page and its tree); URL paths are
            relative to it.
    """

    def __init__(self, page: Path, root: Path) -> None:
        self.page = page.resolve()
        self.root = root.resolve()
        page_url = "/" + self.page.relative_to(self.root).as_posix()
        self.page_url = page_url
        # URL path -> (file, the folder its real path must stay in)
        self.exact: dict[str, tuple[Path, Path]] = {page_url: (self.page, self.page.parent)}
        self.tree_url: str | None = None
        self.tree_dir: Path | None = None
        meta = _page_meta(self.page)
        base = posixpath.dirname(page_url)
        data_dir = self.page.parent / (self.page.stem + "_data")
        for spec in (meta.get("chunks") or {}).values():
            file = spec.get("file") if isinstance(spec, dict) else None
            folder, _, name = file.partition("/") if isinstance(file, str) else ("", "", "")
            if folder == data_dir.name and _SIDE_FILE.fullmatch(name):
                self.exact[posixpath.join(base, file)] = (self.page.parent / file, data_dir)
        tree = meta.get("tree")
        rel = tree.get("root") if isinstance(tree, dict) else None
        if isinstance(rel, str):
            tree_dir = (self.page.parent / rel).resolve()
            if tree_dir == self.root or self.root in tree_dir.parents:  # a tree outside the served folder is not
                self.tree_dir = tree_dir
                self.tree_url = "/" + tree_dir.relative_to(self.root).as_posix() if tree_dir != self.root else ""

    def lookup(self, raw_path: str) -> Path | None:
        """The file for a request target (path, maybe with a query), or None when it is not one the page loads."""
        parts = urllib.parse.urlsplit(raw_path)
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            return None
        try:
            path = urllib.parse.unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            return None
        segments = path.split("/")[1:]
        if "\x00" in path or "\\" in path or any(s in ("", ".", "..") for s in segments):
            return None  # traversal in any spelling ('..', '%2e%2e', '//', a backslash) never reaches a lookup
        if path in self.exact:
            file, fence = self.exact[path]
        elif self.tree_dir is not None and self.tree_url is not None and path.startswith(self.tree_url + "/") \
                and _TREE_FILE.fullmatch(path[len(self.tree_url) + 1:]):
            file, fence = self.tree_dir / path[len(self.tree_url) + 1:], self.tree_dir
        else:
            return None
        real = Path(os.path.realpath(file))
        fence = Path(os.path.realpath(fence))
        if fence not in real.parents or not real.is_file():  # a symlink out of the page's folder or the tree
            return None
        return real


def _page_meta(page: Path) -> dict[str, Any]:
    """The page's metadata (viewer.page writes it as JSON inside <script id="pi0viz-meta">); {} if absent."""
    match = _META.search(page.read_text(encoding="utf-8", errors="replace"))
    if not match:
        return {}
    try:
        meta = json.loads(match.group(1))
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


class ViewerServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer that serves one page's files (`files`) to requests with an allowed Host."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], files: PageFiles) -> None:
        super().__init__(address, _PageHandler)
        self.files = files
        port = self.server_address[1]
        host = address[0]
        names = list(LOOPBACK_HOSTS)
        if host not in WILDCARD_HOSTS:  # the address the operator chose is a name they browse to
            names.append(f"[{host}]" if ":" in host else host)
        self.allowed_hosts = {f"{name.lower()}:{port}" for name in names}


class _PageHandler(http.server.BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "pi0viz"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # keep the terminal for our own messages
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].strip().lower() not in self.server.allowed_hosts:
            # DNS rebinding: a foreign name that resolves to 127.0.0.1 arrives with its own Host header.
            self._refuse(http.HTTPStatus.FORBIDDEN, "this server answers only requests for "
                         + " or ".join(sorted(self.server.allowed_hosts)), body)
            return
        files = self.server.files
        if urllib.parse.urlsplit(self.path).path == "/" and files.page_url != "/":
            self.send_response(http.HTTPStatus.FOUND)
            self.send_header("Location", urllib.parse.quote(files.page_url))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = files.lookup(self.path)
        if path is None:
            self._refuse(http.HTTPStatus.NOT_FOUND, "not found (this server serves only the viewer page and the "
                         "files it loads)", body)
            return
        try:
            handle = open(path, "rb")
        except OSError:
            self._refuse(http.HTTPStatus.NOT_FOUND, "not found", body)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(http.HTTPStatus.OK)
            self.send_header("Content-Type", _TYPES.get(path.suffix.lower(), "application/octet-stream"))
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                shutil.copyfileobj(handle, self.wfile)

    def _refuse(self, status: http.HTTPStatus, text: str, body: bool) -> None:
        data = f"pi0viz view: {text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)


def make_server(page: Path, *, host: str = "127.0.0.1", port: int = 8000,
                root: Path | None = None) -> tuple[ViewerServer, str]:
    """An HTTP server for `page` and the files it loads under `root` (default: the page's folder); returns
    (server, URL of the page). `port` 0 picks a free port."""
    page = page.resolve()
    root = (root or page.parent).resolve()
    files = PageFiles(page, root)
    server = ViewerServer((host, port), files)
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{server.server_address[1]}{urllib.parse.quote(files.page_url)}"
    return server, url


def serve_viewer(page: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                 root: str | os.PathLike | None = None,
                 background: bool = False) -> tuple[ViewerServer, str]:
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
