"""OpenAPI docs that work offline: Swagger UI's files come from the ``swagger-ui-bundle`` package
(pinned in the cloud extra) and are served by the API itself under ``/docs/assets/``; no page
refers to a CDN. Behind the token like every route but the probes. Without the package, ``/docs``
says how to install it (503) instead of loading a blank page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}


def swagger_folder() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(str(swagger_ui_bundle.swagger_ui_path))


def docs_routes(openapi_url: str = "/openapi.json") -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def docs() -> HTMLResponse:
        if swagger_folder() is None:
            raise HTTPException(503, "the API docs need the swagger-ui-bundle package: pip install "
                                     "'coldchain[cloud]' (or read /openapi.json)")
        return get_swagger_ui_html(openapi_url=openapi_url, title="coldchain cloud API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    @router.get("/docs/assets/{name}")
    def asset(name: str) -> FileResponse:
        folder = swagger_folder()
        if folder is None or name not in ASSETS:  # a fixed list: no path from the request reaches the disk
            raise HTTPException(404, "no such asset")
        return FileResponse(folder / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "private, max-age=86400"})

    return router
