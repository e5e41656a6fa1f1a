"""The REST routes of bundles, workflows and CivitAI file lists (docs/PROTOCOL.md, "Bundles").

GET    /api/bundles                   every bundle, summed up
POST   /api/bundles                   make one: {"kind": "list" | "workflow" | "hf_folder" | "civitai", ...}
GET    /api/bundles/{id}              one, with its files' jobs
POST   /api/bundles/{id}/{action}     pause, resume, cancel, retry: each file it fits
DELETE /api/bundles/{id}              cancel it if unfinished, then forget it
POST   /api/workflows?filename=NAME   the body is a workflow file (JSON, PNG, WebP): its models
                                      and which are in place; nothing is downloaded
GET    /api/civitai/files?url=LINK    the files of a CivitAI version and the model's versions
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..bodies import parse_json, read_limited
from ..errors import OrchestratorError
from ..security import request_exposed
from ..sources import Credentials, civitai
from .service import BundleService
from .workflow import MAX_WORKFLOW_BYTES

# a workflow travels as JSON text or base64 inside the request: room for 50 MB of it, encoded
MAX_BUNDLE_REQUEST = MAX_WORKFLOW_BYTES * 4 // 3 + 64 * 1024
TOO_LARGE = "That is larger than 50 MB; no workflow is that big."


def routes(service: Callable[[], BundleService]) -> list[Route]:
    async def list_bundles(request: Request) -> Response:
        return JSONResponse({"bundles": service().snapshot()})

    async def create_bundle(request: Request) -> Response:
        body = parse_json(await read_limited(request, MAX_BUNDLE_REQUEST, TOO_LARGE))
        bundle = await service().create(body, exposed=request_exposed(request.scope))
        return JSONResponse({"bundle": service().detail(bundle.id)}, status_code=201)

    async def one_bundle(request: Request) -> Response:
        return JSONResponse({"bundle": service().detail(request.path_params["bundle_id"])})

    async def act_on_bundle(request: Request) -> Response:
        bundle = await service().act(request.path_params["bundle_id"], request.path_params["action"])
        return JSONResponse({"bundle": service().detail(bundle.id)})

    async def delete_bundle(request: Request) -> Response:
        return JSONResponse({"bundle": await service().delete(request.path_params["bundle_id"])})

    async def read_workflow(request: Request) -> Response:
        data = await read_limited(request, MAX_WORKFLOW_BYTES, TOO_LARGE)
        return JSONResponse(await service().read_workflow(data, request.query_params.get("filename")))

    async def civitai_files(request: Request) -> Response:
        url = request.query_params.get("url") or ""
        if not civitai.matches(url):
            raise OrchestratorError("civitai_bad_link", "That is not a CivitAI link.")
        token = request.headers.get("X-Civitai-Token") or None  # from the page's token field, never the URL
        listing = await service().civitai_files(
            url, Credentials(civitai=token), request_exposed(request.scope)
        )
        return JSONResponse(listing.public())

    return [
        Route("/api/bundles", list_bundles, methods=["GET"]),
        Route("/api/bundles", create_bundle, methods=["POST"]),
        Route("/api/bundles/{bundle_id}", one_bundle, methods=["GET"]),
        Route("/api/bundles/{bundle_id}", delete_bundle, methods=["DELETE"]),
        Route("/api/bundles/{bundle_id}/{action}", act_on_bundle, methods=["POST"]),
        Route("/api/workflows", read_workflow, methods=["POST"]),
        Route("/api/civitai/files", civitai_files, methods=["GET"]),
    ]
