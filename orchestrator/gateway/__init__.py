"""aria2's JSON-RPC on the app's own port, with the app's access rules and a policy in front
of the shared daemon: `Gateway` (gateway/rpc.py) and its routes, `make_routes`.

The app builds one `Gateway(daemon_url, daemon_secret, access_token, Policy(models_dir,
staging_dir), intake, bound_to_loopback=...)`, adds `make_routes(gateway)` to its routes,
and awaits `gateway.start()` and `gateway.stop()` in its lifespan. The intake hook is
gateway/intake.py.
"""

from .dispatch import Caller, Dispatcher
from .intake import Intake, Options
from .jsonrpc import Fault
from .policy import Policy, redact
from .rpc import PATH, Gateway, make_routes

__all__ = [
    "PATH",
    "Caller",
    "Dispatcher",
    "Fault",
    "Gateway",
    "Intake",
    "Options",
    "Policy",
    "make_routes",
    "redact",
]
