"""Starlette routes: the page, the WebSocket and the REST API. No logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import __version__, messages
from .bodies import MAX_MESSAGE_BYTES, parse_json, read_limited, strict_json
from .bundles.api import routes as bundle_routes
from .bundles.hf_folder import parse_folder
from .bundles.model import BundleStore
from .bundles.service import BundleService
from .config import Settings
from .engines import EngineChoice, choose_engine
from .engines.aria2 import Aria2Engine
from .errors import OrchestratorError
from .events import Hub
from .files import private_folder
from .gateway import Gateway
from .gateway import Policy as RpcPolicy
from .gateway.orchestrated import OrchestratorIntake
from .gateway.rpc import PATH as RPC_PATH
from .jobs import JobStore, exclusive_state
from .library.api import routes as library_routes
from .library.service import LibraryService
from .manager import Manager
from .security import AccessGuard, new_access_token, request_exposed

log = logging.getLogger(__name__)

ACTIONS = ("cancel", "pause", "resume", "retry")
DAEMON_CHECK_SECONDS = 2.0


def web_folder() -> Path:
    """web/ inside the installed package, or beside it in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "web", package.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("web/index.html not found")


def error_response(error: OrchestratorError) -> JSONResponse:
    return JSONResponse({"error": error.as_dict()}, status_code=error.status)


def create_app(settings: Settings, choice: EngineChoice | None = None) -> Starlette:
    """The ASGI app. `choice` lets tests hand in an engine; by default --engine decides."""
    state: dict[str, Any] = {}
    token = settings.access_token or new_access_token()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        settings.staging_dir.mkdir(parents=True, exist_ok=True)
        private_folder(settings.state_dir)
        with exclusive_state(settings.state_dir):
            async with _running(settings, choice, state, token):
                yield

    def manager() -> Manager:
        return state["manager"]

    async def health(request: Request) -> Response:
        jobs = manager().jobs.values()
        work = manager().work_health()
        ok = manager().engine_up and not work["resolving"]["stuck"]
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "version": __version__,
                "engine": manager().engine_info,
                "jobs": {"active": sum(1 for job in jobs if job.active), "total": len(jobs)},
                "work": work,
                "notices": manager().notices,
                "clients": state["hub"].clients,
            }
        )

    async def types(request: Request) -> Response:
        return JSONResponse({"layout": settings.layout, "types": manager().types()})

    async def vocabulary(request: Request) -> Response:
        return JSONResponse(manager().vocabulary())

    async def list_downloads(request: Request) -> Response:
        return JSONResponse({"jobs": manager().snapshot()})

    async def create_download(request: Request) -> Response:
        data = parse_json(await read_limited(request))
        if is_folder_link(data):
            made = await state["bundles"].create(
                {"kind": "hf_folder", **data}, exposed=request_exposed(request.scope)
            )
            return JSONResponse({"bundle": state["bundles"].detail(made.id)}, status_code=201)
        job, created = await manager().submit(
            data,
            request_id=data.get("id") if isinstance(data, dict) else None,
            exposed=request_exposed(request.scope),
        )
        return JSONResponse({"job": job.public()}, status_code=201 if created else 200)

    async def one_download(request: Request) -> Response:
        job = manager().get(request.path_params["job_id"])
        return JSONResponse({"job": job.public()})

    async def delete_download(request: Request) -> Response:
        job = await manager().cancel(request.path_params["job_id"])
        return JSONResponse({"job": job.public()})

    async def act_on_download(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume", "retry"):
            raise OrchestratorError("not_found", f"Unknown action {action[:20]!r}.", 404)
        job = await getattr(manager(), action)(request.path_params["job_id"])
        return JSONResponse({"job": job.public()})

    async def websocket(socket: WebSocket) -> None:
        await _serve_socket(socket, manager(), state["bundles"], state["hub"], state["library"])

    async def jsonrpc_http(request: Request) -> Response:
        gateway = state.get("gateway")
        if gateway is None:
            return JSONResponse(rpc_unavailable(), status_code=503)
        response: Response = await gateway.serve_http(request)
        return response

    async def jsonrpc_socket(socket: WebSocket) -> None:
        gateway = state.get("gateway")
        if gateway is None:
            await socket.accept()
            await socket.close(1013, "aria2_not_in_use")
            return
        await gateway.serve_websocket(socket)

    async def handle_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OrchestratorError)
        return error_response(exc)

    routes = [
        Route("/api/health", health),
        Route("/api/types", types),
        Route("/api/vocabulary", vocabulary),
        *library_routes(lambda: state["library"]),
        Route("/api/downloads", list_downloads, methods=["GET"]),
        Route("/api/downloads", create_download, methods=["POST"]),
        Route("/api/downloads/{job_id}", one_download, methods=["GET"]),
        Route("/api/downloads/{job_id}", delete_download, methods=["DELETE"]),
        Route("/api/downloads/{job_id}/{action}", act_on_download, methods=["POST"]),
        *bundle_routes(lambda: state["bundles"]),
        WebSocketRoute("/ws", websocket),
        # aria2's own JSON-RPC for AriaNg and aria2p, with the app's access rules (gateway/)
        Route(RPC_PATH, jsonrpc_http, methods=["GET", "POST", "OPTIONS"]),
        WebSocketRoute(RPC_PATH, jsonrpc_socket),
        Mount("/", StaticFiles(directory=web_folder(), html=True)),
    ]
    guard = Middleware(AccessGuard, token=token, bound_to_loopback=not settings.exposed)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[guard],
        exception_handlers={OrchestratorError: handle_error},
    )


@contextlib.asynccontextmanager
async def _running(
    settings: Settings, choice: EngineChoice | None, state: dict[str, Any], token: str
) -> AsyncIterator[None]:
    """The engine, the manager and the daemon watchdog, for the life of the server."""
    picked = choice if choice is not None else await asyncio.to_thread(choose_engine, settings)
    hub = Hub()
    manager = Manager(settings, JobStore(settings.database_path), picked.engine, hub)
    await manager.start()
    manager.health.describe_choice(picked.describe())
    bundles = BundleService(manager, BundleStore(settings.database_path), hub)
    await bundles.start()
    library = LibraryService(manager, hub)
    await library.start()
    state.update(manager=manager, hub=hub, choice=picked, bundles=bundles, library=library)
    gateway = await _start_gateway(settings, picked, manager, token)
    state["gateway"] = gateway
    watchdog = asyncio.create_task(_watch_daemon(picked, manager))
    log.info("serving on http://%s:%s with the %s engine", settings.host, settings.port, picked.engine.name)
    try:
        yield
    finally:
        watchdog.cancel()
        if gateway:
            await gateway.stop()
        await library.stop()
        await bundles.stop()
        bundles.store.close()
        await manager.stop()
        manager.store.close()
        if picked.daemon:
            await asyncio.to_thread(picked.daemon.stop)


async def _start_gateway(
    settings: Settings, choice: EngineChoice, manager: Manager, token: str
) -> Gateway | None:
    """aria2 clients get the daemon through the app's own door, when the engine is aria2."""
    engine = choice.engine
    if not isinstance(engine, Aria2Engine):
        return None
    gateway = Gateway(
        engine.rpc_url,
        engine.secret,
        token,
        RpcPolicy(settings.models_dir, settings.staging_dir),
        OrchestratorIntake(manager),
        bound_to_loopback=not settings.exposed,
    )
    gateway.listen(_wake_when_finished(engine))
    await gateway.start()
    return gateway


_FINISHED = ("aria2.onDownloadComplete", "aria2.onDownloadError", "aria2.onDownloadStop")


def _wake_when_finished(engine: Aria2Engine) -> Callable[[dict[str, Any]], None]:
    """aria2 says when a transfer ends: the poller looks at once instead of at its next tick
    (half a second per small file, on average)."""

    def heard(notification: dict[str, Any]) -> None:
        if notification.get("method") in _FINISHED and engine.on_finish is not None:
            engine.on_finish()

    return heard


def rpc_unavailable() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": 1,
            "message": "This server runs without aria2 (the fallback engine), so it has no aria2 RPC.",
        },
    }


async def _watch_daemon(choice: EngineChoice, manager: Manager) -> None:
    """Restart our own aria2c if it dies; its session brings the downloads back."""
    if not choice.daemon:
        return
    while True:
        await asyncio.sleep(DAEMON_CHECK_SECONDS)
        try:
            if await asyncio.to_thread(choice.daemon.ensure_running):
                manager.health.announce("aria2c stopped and was restarted")
        except Exception:
            log.exception("could not restart aria2c")


# -- WebSocket -----------------------------------------------------------------------


async def _serve_socket(
    socket: WebSocket, manager: Manager, bundles: BundleService, hub: Hub, library: LibraryService
) -> None:
    await socket.accept()
    subscription = hub.subscribe()
    subscription.put(
        json.dumps(
            messages.hello(
                manager.engine_info,
                manager.snapshot(),
                manager.vocabulary(),
                manager.notices,
                bundles.snapshot(),
                library.summary(),
            )
        )
    )
    sender = asyncio.create_task(_pump(socket, subscription))
    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                break
            reply = await _handle_frame(manager, bundles, message, request_exposed(socket.scope))
            if reply is not None:
                subscription.put(json.dumps(reply))
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        subscription.close()


async def _pump(socket: WebSocket, subscription: Any) -> None:
    """The only sender on this socket, so frames never interleave."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            await socket.send_text(await subscription.get())


async def _handle_frame(
    manager: Manager, bundles: BundleService, message: Mapping[str, Any], exposed: bool
) -> dict[str, Any] | None:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        return messages.error_reply(
            None, OrchestratorError("message_too_large", "That message is too large.")
        )
    try:
        data = strict_json(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, NaN, nesting past the stack
        return messages.error_reply(
            None, OrchestratorError("invalid_json", "That message is not valid JSON.")
        )
    if not isinstance(data, dict):
        return messages.error_reply(
            None, OrchestratorError("invalid_message", "A message must be a JSON object.")
        )
    try:
        return await _dispatch(manager, bundles, data, exposed)
    except OrchestratorError as error:
        if data.get("type") == "download":
            return messages.download_refused(data.get("id"), error)
        return messages.error_reply(data.get("id"), error)


async def _dispatch(
    manager: Manager, bundles: BundleService, data: dict[str, Any], exposed: bool
) -> dict[str, Any] | None:
    kind = data.get("type")
    payload = data.get("data")
    if kind == "ping":
        return messages.pong(data.get("id"))
    if kind == "download" and isinstance(payload, dict) and is_folder_link(payload):
        kind, payload = "bundle", {"kind": "hf_folder", **payload}
    if kind == "download":
        job, created = await manager.submit(payload, request_id=data.get("id"), exposed=exposed)
        # a new job's own events, sent to everyone, answer this
        return None if created else messages.existing_job(data.get("id"), job)
    if kind == "bundle":
        bundle = await bundles.create(payload, exposed=exposed)
        return messages.bundle_event(bundles.detail(bundle.id), "accepted", request_id=data.get("id"))
    if kind in ACTIONS:
        target = payload if isinstance(payload, dict) else {}
        if "bundle" in target:
            await bundles.act(target.get("bundle"), kind)
        else:
            await getattr(manager, kind)(target.get("job"))
        return None  # the state change is published to everyone
    known = ", ".join(("download", "bundle", *ACTIONS, "ping"))
    raise OrchestratorError("unknown_message", f"Unknown message type {str(kind)[:40]!r}; known: {known}.")


def is_folder_link(body: Any) -> bool:
    """A Hugging Face folder or repository link, which is a bundle of files, not one download."""
    return (
        isinstance(body, dict) and isinstance(body.get("url"), str) and parse_folder(body["url"]) is not None
    )
