"""The browser files Prism serves itself, and the pages that use them: no CDN, nothing a page
loads from anywhere but Prism.

Every file served is named in ``FILES``, an allow-list: a request names a file, the name is
looked up there, and the path read is the list's, never one built from the request. The
vendored files (GraphiQL, React, Chart.js, …) are pinned by ``web/package-lock.json``; ``make
install`` runs ``npm ci`` there and copies the ones named here into ``static/vendor/``
(``python -m prism.web.assets <node_modules>``); Prism's own page scripts and styles live in
``static/``.

A file's URL is ``/assets/<digest>/<name>``, the digest that of its bytes: an answer is
cacheable for a year (``immutable``), and a new file is a new URL. A page names its files
through :meth:`Assets.url` and is sent with a Content-Security-Policy that lets it load
nothing but them (:func:`page_response`); a page whose files are missing says which, instead
of being blank."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import html
import shutil
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

STATIC = Path(__file__).with_name("static")
ROUTE = "/assets/{digest}/{name}"
IMMUTABLE = "public, max-age=31536000, immutable"
# Below this a file is sent as it is: gzip would save too little to matter.
_GZIP_FROM_BYTES = 1024
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}


@dataclass(frozen=True)
class AssetFile:
    """One file a page may load. ``name`` is the last segment of its URL; ``path`` is where
    it is under ``static/``; ``source``, for a vendored file, where ``make install`` takes it
    from under ``web/node_modules/`` (None: one of Prism's own, committed)."""

    name: str
    path: str
    source: str | None = None


FILES: tuple[AssetFile, ...] = (
    # React 18's UMD builds: the globals GraphiQL's UMD build runs on.
    AssetFile("react.js", "vendor/react.production.min.js", "react/umd/react.production.min.js"),
    AssetFile(
        "react-dom.js",
        "vendor/react-dom.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
    ),
    AssetFile("graphiql.js", "vendor/graphiql.min.js", "graphiql/graphiql.min.js"),
    AssetFile("graphiql.css", "vendor/graphiql.min.css", "graphiql/graphiql.min.css"),
    AssetFile(
        "graphiql-explorer.js",
        "vendor/graphiql-explorer.umd.js",
        "@graphiql/plugin-explorer/dist/index.umd.js",
    ),
    AssetFile(
        "graphiql-explorer.css",
        "vendor/graphiql-explorer.css",
        "@graphiql/plugin-explorer/dist/style.css",
    ),
    # Chart.js's UMD build (the global ``Chart``): the dashboard's charts, drawn on canvases.
    AssetFile("chart.js", "vendor/chart.umd.min.js", "chart.js/dist/chart.umd.min.js"),
    # Prism's own: the IDE page's script (token sign-in, the fetcher) and its style; the
    # dashboard's.
    AssetFile("prism-graphiql.js", "prism-graphiql.js"),
    AssetFile("prism-graphiql.css", "prism-graphiql.css"),
    AssetFile("prism-dashboard.js", "prism-dashboard.js"),
    AssetFile("prism-dashboard.css", "prism-dashboard.css"),
)


@dataclass(frozen=True)
class Loaded:
    """A file's bytes as served, read once: what its digest names can never change."""

    body: bytes
    gzipped: bytes | None
    digest: str  # the URL's: hex SHA-256, shortened
    integrity: str  # Subresource Integrity: sha384-<base64>
    media_type: str


class Assets:
    """The allow-listed files under ``directory``, read (and digested) on first use."""

    def __init__(self, directory: Path = STATIC, files: Iterable[AssetFile] = FILES) -> None:
        self.directory = directory
        self.files: Mapping[str, AssetFile] = {f.name: f for f in files}
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def load(self, name: str) -> Loaded | None:
        """The file of that name; None while it is not installed (looked for again next
        time). KeyError: not allowed."""
        entry = self.files[name]
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None:
                loaded = _read(self.directory / entry.path)
                if loaded is not None:
                    self._loaded[name] = loaded
            return loaded

    async def prepare(self, names: Iterable[str]) -> None:
        """Read (and compress) files not read yet away from the event loop."""
        waiting = [name for name in names if name not in self._loaded]
        if waiting:
            await asyncio.to_thread(lambda: [self.load(name) for name in waiting])

    def missing(self, names: Iterable[str]) -> list[AssetFile]:
        return [self.files[name] for name in names if self.load(name) is None]

    def url(self, name: str) -> str:
        loaded = self.load(name)
        if loaded is None:
            raise LookupError(f"{name} is not installed")
        return f"/assets/{loaded.digest}/{name}"

    async def serve(self, request: Request) -> Response:
        """GET /assets/<digest>/<name>: the allow-listed file, if that is its digest now."""
        name = request.path_params["name"]
        if name in self.files:
            await self.prepare([name])
        loaded = self.load(name) if name in self.files else None
        if loaded is None or request.path_params["digest"] != loaded.digest:
            return Response(
                "Not found.", 404, media_type="text/plain", headers={"Cache-Control": "no-store"}
            )
        headers = {
            "Cache-Control": IMMUTABLE,
            "ETag": f'"{loaded.digest}"',
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        body = loaded.body
        if loaded.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body = loaded.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=loaded.media_type, headers=headers)


def _read(path: Path) -> Loaded | None:
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        return None
    sha384 = base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Loaded(
        body=body,
        gzipped=gzip.compress(body, 6, mtime=0) if len(body) >= _GZIP_FROM_BYTES else None,
        digest=hashlib.sha256(body).hexdigest()[:20],
        integrity=f"sha384-{sha384}",
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
    )


@dataclass(frozen=True)
class Policy:
    """A page's Content-Security-Policy: nothing by default, scripts, styles and requests
    to its own origin only; ``images``/``fonts``/``connect``/``styles`` add sources (e.g.
    ``data:``). Scripts never get more than ``'self'``."""

    images: Sequence[str] = ()
    fonts: Sequence[str] = ()
    connect: Sequence[str] = ()
    styles: Sequence[str] = ()  # e.g. the hash of a style element a library adds
    extra: Mapping[str, str] = field(default_factory=dict)

    def header(self) -> str:
        directives = {
            "default-src": "'none'",
            "script-src": "'self'",
            "style-src": " ".join(["'self'", *self.styles]),
            "connect-src": " ".join(["'self'", *self.connect]),
            "img-src": " ".join(["'self'", *self.images]),
            "font-src": " ".join(["'self'", *self.fonts]),
            "base-uri": "'none'",
            "form-action": "'none'",
            "frame-ancestors": "'none'",
            **self.extra,
        }
        return "; ".join(f"{name} {value}" for name, value in directives.items())


@dataclass(frozen=True)
class Page:
    """An HTML page made of allow-listed files: its styles, its scripts (in order, each
    with its integrity), and a body with no script or style of its own."""

    title: str
    styles: Sequence[str]
    scripts: Sequence[str]
    body: str
    policy: Policy = Policy()
    # What the page is, for the message shown when its files are not installed.
    what: str = "This page"

    @property
    def files(self) -> list[str]:
        return [*self.styles, *self.scripts]


async def page_response(assets: Assets, page: Page) -> Response:
    """The page, with its policy and no caching of its own (it names the files' digests);
    when a file it needs is missing, a page that says which and how to install them."""
    await assets.prepare(page.files)
    headers = {
        "Content-Security-Policy": page.policy.header(),
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    missing = assets.missing(page.files)
    if missing:
        return HTMLResponse(_missing_html(page, missing), 503, headers=headers)
    links = "".join(
        f'<link rel="stylesheet" href="{assets.url(n)}" integrity="{_integrity(assets, n)}">'
        for n in page.styles
    )
    scripts = "".join(
        f'<script src="{assets.url(n)}" integrity="{_integrity(assets, n)}" defer></script>'
        for n in page.scripts
    )
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(page.title)}</title>{links}{scripts}</head>"
        f"<body>{page.body}</body></html>"
    )
    return HTMLResponse(document, headers=headers)


def _integrity(assets: Assets, name: str) -> str:
    loaded = assets.load(name)
    assert loaded is not None
    return loaded.integrity


def _missing_html(page: Page, missing: Sequence[AssetFile]) -> str:
    items = "".join(
        f"<li><code>{html.escape(f.path)}</code>"
        + (f" (from <code>{html.escape(f.source)}</code>)" if f.source else "")
        + "</li>"
        for f in missing
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(page.title)}: files missing</title></head><body>"
        f"<h1>{html.escape(page.what)} cannot start: its files are not installed</h1>"
        f"<p>Prism serves these files itself, from <code>prism/web/static/</code> in its "
        f"installation, and they are missing:</p><ul>{items}</ul>"
        "<p>The vendored ones are pinned by <code>web/package-lock.json</code>. In a checkout, "
        "<code>make install</code> installs them (<code>npm ci</code> in <code>web/</code>, "
        "then <code>python -m prism.web.assets web/node_modules</code>); a wheel built after "
        "that includes them.</p></body></html>"
    )


def vendor(node_modules: Path, directory: Path = STATIC) -> list[Path]:
    """Copy the vendored files of ``FILES`` from an ``npm ci`` of ``web/`` into
    ``directory``; what was there and is no longer named is removed."""
    target = directory / "vendor"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copied = []
    for entry in FILES:
        if entry.source is None:
            continue
        source = node_modules / entry.source
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: run `npm ci` in web/ first")
        destination = directory / entry.path
        shutil.copyfile(source, destination)
        copied.append(destination)
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m prism.web.assets <web/node_modules>")
    vendor(Path(sys.argv[1]))
