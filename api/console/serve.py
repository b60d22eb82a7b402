"""Serves the console: index.html at /, its modules, styles and vendored libraries under /console/.

Plain files, no build step: the pages are ES modules, and the third-party libraries are copied from
pinned npm packages by deploy/scripts/refresh-console-assets, so the console works without internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/console"
# The page may load only what this server serves: a page that tried a CDN would fail in the browser
# (and in the browser tests) instead of silently depending on internet access. Tiles are the exception
# a configuration opts into (console.tile_url), so images may come from anywhere.
_POLICY = ("default-src 'self'; img-src 'self' data: blob: https: http:; style-src 'self' 'unsafe-inline'; "
           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")


def serve_console(app: FastAPI) -> None:
    # Compressed by the app's GZip middleware: Leaflet and the modules shrink to a third.
    app.mount(ASSETS, StaticFiles(directory=str(STATIC)), name="console-assets")

    page = (STATIC / "index.html").read_text(encoding="utf-8")

    async def console_page(request: Request) -> Response:
        # Whether the page must ask for a key: told up front, so that it never has to learn it from a 401.
        auth = request.state.services.settings.auth.value
        return HTMLResponse(page.replace("<body>", f'<body data-auth="{auth}">', 1), headers={
            "Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"})

    app.add_route("/", console_page, include_in_schema=False)
