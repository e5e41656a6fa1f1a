"""`orchestrator doctor`: is this machine ready to download models, and if not, what to fix.

It only looks: it starts no daemon, creates no secret and writes nothing but a
probe file that it removes at once. Tokens are shown masked, never whole.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aria2p
import requests

from .. import files, hostnet
from ..config import Settings, settings_from_args
from ..engines.aria2 import Aria2Engine
from ..engines.aria2_daemon import aria2c_path, aria2c_version
from .server import ServerError, ServerGone, open_server

LOW_SPACE = 10 * 1024**3  # an SDXL checkpoint alone is about 7 GB
TOKENS = (("CivitAI token", "CIVITAI_TOKEN"), ("Hugging Face token", "HF_TOKEN"))


@dataclass
class Check:
    level: str  # ok | info | warn | FAIL (FAIL makes the exit code non-zero)
    what: str
    detail: str
    fix: str | None = None


def run_doctor(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    checks = [
        check_aria2c(settings),
        check_rpc(settings),
        check_folder("models folder", settings.models_dir, space=True),
        check_folder("state folder", settings.state_dir, space=False),
        check_models_filesystem(settings.models_dir),
        check_ipv6(settings, service_hosts()),
        *check_tokens(),
        check_server(args.server),
    ]
    for check in checks:
        print(f"{check.level:<5} {check.what}: {check.detail}")
        if check.fix:
            print(f"      fix: {check.fix}")
    failed = [check for check in checks if check.level == "FAIL"]
    print(f"\n{len(failed)} problem(s) to fix." if failed else "\nReady to download.")
    return 1 if failed else 0


def check_aria2c(settings: Settings) -> Check:
    path = aria2c_path()
    if settings.engine == "requests":
        return Check("info", "aria2c", "not used (--engine requests)")
    if not path:  # not essential: the fallback engine works, and a daemon may run elsewhere
        return Check(
            "warn",
            "aria2c",
            "not installed: downloads use one connection and may be much slower",
            "install it: apt install aria2 (or conda install -c conda-forge aria2)",
        )
    version = aria2c_version(path)
    if version is None:
        return Check("FAIL", "aria2c", f"{path} does not run", "reinstall it: apt install --reinstall aria2")
    return Check("ok", "aria2c", f"{version} ({path})")


def check_rpc(settings: Settings) -> Check:
    """Try the configured RPC URL with the secret `serve` would use (flag/env, else the state file)."""
    url = settings.aria2_rpc_url
    secret = settings.aria2_secret or _saved_secret(settings.state_dir)
    needed = settings.engine == "aria2"
    try:
        version = Aria2Engine(url, secret or "", timeout=3).version()
    except aria2p.ClientException:  # it answers, but refuses the secret
        return Check(
            "FAIL" if needed else "warn",
            "aria2 RPC",
            f"a daemon at {url} refuses our secret (it belongs to someone else)",
            "set ARIA2_SECRET to its secret, or use another --aria2-rpc-url; `serve` and `get` "
            "otherwise start their own aria2c on a free port",
        )
    except (requests.RequestException, ValueError, KeyError):
        if needed:
            return Check(
                "FAIL",
                "aria2 RPC",
                f"nothing answers at {url}",
                "start the daemon: orchestrator aria2d (or under supervisord: make supervise)",
            )
        if not aria2c_path():
            return Check(
                "info",
                "aria2 RPC",
                f"no daemon at {url}, and no aria2c to start one: `serve` and "
                "`get` use the single-connection fallback",
            )
        return Check("info", "aria2 RPC", f"no daemon at {url}; `serve` and `get` start their own")
    return Check("ok", "aria2 RPC", f"aria2 {version} answers at {url} and accepts the secret")


def _saved_secret(state_dir: Path) -> str | None:
    path = state_dir / "aria2.secret"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def check_folder(what: str, folder: Path, space: bool) -> Check:
    """Writable (probed with a real file), and for models, room for a few big files."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    fix = f"pick another folder (--{what.split()[0]}-dir) or fix its permissions"
    if existing is None or not existing.is_dir():
        return Check("FAIL", what, f"{existing or folder} is not a folder", fix)
    if not _writable(existing):
        return Check("FAIL", what, f"{existing} is not writable", fix)
    detail = str(folder) if existing == folder else f"{folder} (will be created)"
    if not space:
        return Check("ok", what, f"{detail}, writable")
    free = shutil.disk_usage(existing).free
    text = f"{detail}, writable, {free / 1024**3:.1f} GiB free"
    if free < LOW_SPACE:
        return Check("warn", what, text, "free some space: a checkpoint needs 2-7 GB, a Flux model over 20")
    return Check("ok", what, text)


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".orchestrator-doctor-"):
            return True
    except OSError:
        return False


def check_models_filesystem(models: Path) -> Check:
    kind = files.filesystem_type(models if models.exists() else models.parent) or "unknown"
    if files.on_fuse(models if models.exists() else models.parent):
        return Check(
            "info",
            "models file system",
            f"{kind} (FUSE): downloads there are not preallocated, "
            "since that would write every zero over the mount first",
        )
    return Check("ok", "models file system", kind)


def service_hosts() -> list[str]:
    """The hosts downloads come from most: the CivitAI and Hugging Face the server talks to."""
    from ..sources import civitai, huggingface

    return [urlsplit(url).hostname or "" for url in (civitai.base_url(), huggingface.endpoint())]


def check_ipv6(settings: Settings, hosts: list[str]) -> Check:
    """A machine whose IPv6 reaches nothing makes aria2 fail every download of a dual-stack host."""
    usable = hostnet.ipv6_usable()
    if settings.ipv6 == "off":
        return Check("ok", "IPv6", "off for aria2 (--ipv6 off)")
    reached = [hostnet.reach(host) for host in hosts if host]
    holes = [r.host for r in reached if r.black_hole]
    if holes:
        return Check(
            "FAIL",
            "IPv6",
            f"{', '.join(holes)} answer(s) over IPv4 but not over IPv6, and aria2 tries IPv6 first",
            "start with --ipv6 off (or ORCHESTRATOR_IPV6=off)",
        )
    if settings.ipv6 == "auto" and not usable:
        return Check(
            "ok", "IPv6", "this machine has no usable IPv6 route; aria2 uses IPv4 only (--ipv6 auto)"
        )
    return Check("ok", "IPv6", f"{'usable' if usable else 'on'}; no service host failed over it")


def check_tokens() -> list[Check]:
    checks = []
    for what, env in TOKENS:
        value = os.environ.get(env, "").strip()
        if value:
            checks.append(Check("ok", what, f"{env} is set ({mask(value)})"))
        else:
            checks.append(
                Check(
                    "info",
                    what,
                    f"{env} not set; needed only for gated or private files",
                    f"export {env}=... before `serve` or `get` when a download asks for it",
                )
            )
    return checks


def mask(token: str) -> str:
    """`abcd…wxyz`: enough to tell tokens apart, too little to use one."""
    if len(token) < 16:
        return f"{len(token)} characters"
    return f"{token[:4]}…{token[-4:]}"


def check_server(server: str | None) -> Check:
    try:
        client = open_server(server)
    except ServerGone as gone:
        return Check("info", "server", f"{gone.message}; `get` downloads in its own process")
    except ServerError as error:  # it is there but refuses us, e.g. without its access token
        return Check("warn", "server", error.message)
    client.close()
    engine = client.health_info.get("engine") or {}
    jobs = client.health_info.get("jobs") or {}
    return Check(
        "ok",
        "server",
        f"{client.base_url} answers (engine {engine.get('name')}, "
        f"{jobs.get('active', 0)} active downloads); `get` sends downloads there",
    )
