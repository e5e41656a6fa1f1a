"""The REST routes of the model library (docs/PROTOCOL.md, "Library").

GET    /api/models                    every model file by type, with what the library knows, and
                                      the library's summary
POST   /api/models/scan               scan the models folders in the background (progress: `library`
                                      events on the WebSocket)
DELETE /api/models?path=PATH          delete a model and its sidecars (PATH as the listing gives it)
GET    /api/models/preview?path=PATH  the model's preview image, from its folder
POST   /api/models/update             {"path": PATH, "civitai_token"?}: the newer CivitAI version, beside it
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..bodies import parse_json, read_limited
from ..errors import OrchestratorError
from ..security import request_exposed
from .service import LibraryService


def routes(service: Callable[[], LibraryService]) -> list[Route]:
    async def list_models(request: Request) -> Response:
        return JSONResponse(await service().models())

    async def scan(request: Request) -> Response:
        started = await service().scan()
        return JSONResponse({**started, "library": service().summary()}, status_code=202)

    async def delete_model(request: Request) -> Response:
        return JSONResponse({"removed": await service().delete(_path(request))})

    async def preview(request: Request) -> Response:
        kind, data = await service().preview(_path(request))
        # the bytes come from the models folder: never let a browser read them as anything else
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=kind, headers=headers)

    async def update(request: Request) -> Response:
        body = parse_json(await read_limited(request))
        path = body.get("path") if isinstance(body, dict) else None
        if not isinstance(path, str):
            raise OrchestratorError("invalid_path", "Give the model's `path` as the library lists it.")
        token = body.get("civitai_token")  # the browser's own key, as a download sends it
        job = await service().download_update(
            path,
            exposed=request_exposed(request.scope),
            civitai_token=token if isinstance(token, str) else None,
        )
        return JSONResponse({"job": job.public()}, status_code=201)

    return [
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/models", delete_model, methods=["DELETE"]),
        Route("/api/models/scan", scan, methods=["POST"]),
        Route("/api/models/preview", preview, methods=["GET"]),
        Route("/api/models/update", update, methods=["POST"]),
    ]


def _path(request: Request) -> str:
    path = request.query_params.get("path")
    if not path:
        raise OrchestratorError("invalid_path", "Give the model's path: ?path=lora/x.safetensors.")
    return path
