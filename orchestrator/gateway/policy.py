"""What the aria2 gateway lets through to the daemon, and what it hides in the answers.

The daemon is shared: the orchestrator's own downloads run in it, and aria2's options
can run programs and write files anywhere (aria2's manual: --on-download-complete,
--dir, --log, --save-session, --input-file; its "Input File" section lists the options
one download takes, and `aria2.changeGlobalOption` takes nearly all of them). So an
aria2 client gets aria2's download methods, not the daemon:

- refused methods: `aria2.shutdown` and `aria2.forceShutdown` (the daemon is shared),
  `aria2.addTorrent` and `aria2.addMetalink` (the app turns torrents and metalinks off),
  and any method aria2 1.37 does not have (a later aria2 may add one this policy has
  not judged);
- refused options, wherever they come (`addUri`, `changeOption`, `changeGlobalOption`):
  hooks that run programs, options that name files, proxies (the app sets them itself
  for its guarded downloads), and every `rpc-*`; `follow-torrent` and
  `follow-metalink` only as "false", and `addUri` downloads get both as "false";
- `dir` must resolve (`..` and symlinks followed) inside the models folder and outside
  its staging folder; it is passed on resolved. `out` is a bare file name;
- `changeGlobalOption` may change only speed limits and how many downloads run at once;
- links are http(s), ftp or sftp: a magnet link is a torrent.

Answers lose what the daemon keeps of people's secrets (the app hands aria2 signed
URLs, Drive cookies in `header`, per-download proxy credentials): the values of
`header`, of every `*-user` and `*-passwd` option, of `rpc-secret` and the cookie
files, user names and passwords inside URLs, and the values of query parameters that
carry tokens or signatures, in every URI of every answer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from ..errors import OrchestratorError

# aria2 1.37's methods (its src/RpcMethodFactory.cc)
METHODS = frozenset(
    {
        "aria2.addUri",
        "aria2.addTorrent",
        "aria2.addMetalink",
        "aria2.remove",
        "aria2.forceRemove",
        "aria2.pause",
        "aria2.pauseAll",
        "aria2.forcePause",
        "aria2.forcePauseAll",
        "aria2.unpause",
        "aria2.unpauseAll",
        "aria2.tellStatus",
        "aria2.getUris",
        "aria2.getFiles",
        "aria2.getPeers",
        "aria2.getServers",
        "aria2.tellActive",
        "aria2.tellWaiting",
        "aria2.tellStopped",
        "aria2.changePosition",
        "aria2.changeUri",
        "aria2.getOption",
        "aria2.changeOption",
        "aria2.getGlobalOption",
        "aria2.changeGlobalOption",
        "aria2.getGlobalStat",
        "aria2.purgeDownloadResult",
        "aria2.removeDownloadResult",
        "aria2.getVersion",
        "aria2.getSessionInfo",
        "aria2.shutdown",
        "aria2.forceShutdown",
        "aria2.saveSession",
        "system.multicall",
        "system.listMethods",
        "system.listNotifications",
    }
)
TORRENTS_OFF = "torrents and metalinks are turned off in this server"
REFUSED_METHODS = {
    "aria2.shutdown": "the daemon is shared",
    "aria2.forceShutdown": "the daemon is shared",
    "aria2.addTorrent": TORRENTS_OFF,
    "aria2.addMetalink": TORRENTS_OFF,
}
GLOBAL_OPTIONS_ALLOWED = (
    "max-overall-download-limit",
    "max-overall-upload-limit",
    "max-download-limit",
    "max-upload-limit",
    "max-concurrent-downloads",
)
LINK_SCHEMES = ("http", "https", "ftp", "sftp")

RUNS_A_PROGRAM = "it runs a program on the server"
NAMES_A_FILE = "it reads or writes a file on the server, outside the models folder"
SETS_A_PROXY = "the server sets proxies itself (they guard what its downloads may reach)"
RPC_SETTING = "it is a setting of the daemon's own RPC server"
REFUSED_OPTIONS = {
    **dict.fromkeys(
        (
            "on-download-start",
            "on-download-pause",
            "on-download-stop",
            "on-download-complete",
            "on-download-error",
            "on-bt-download-complete",
        ),
        RUNS_A_PROGRAM,
    ),
    **dict.fromkeys(
        (
            "input-file",
            "save-session",
            "log",
            "conf-path",
            "load-cookies",
            "save-cookies",
            "server-stat-of",
            "server-stat-if",
            "netrc-path",
            "dht-file-path",
            "dht-file-path6",
            "index-out",
            "torrent-file",
            "metalink-file",
            "ca-certificate",
            "certificate",
            "private-key",
        ),
        NAMES_A_FILE,
    ),
    **dict.fromkeys(
        ("all-proxy", "http-proxy", "https-proxy", "ftp-proxy", "no-proxy", "proxy-method"), SETS_A_PROXY
    ),
}
FOLLOW_OPTIONS = ("follow-torrent", "follow-metalink")

REDACTED = "redacted"
# query parameters whose values are credentials: signed URLs (S3 and R2 X-Amz-*, Google
# X-Goog-*, CloudFront Signature/Policy, Azure sig) and tokens passed in links
_SECRET_PARAM_WORDS = ("token", "secret", "signature", "passw", "credential", "auth", "apikey", "api_key")
_SECRET_PARAMS = frozenset({"sig", "key", "policy", "code", "pwd", "pass", "session", "sessionid", "at"})
_SECRET_PARAM_PREFIXES = ("x-amz-", "x-goog-")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def refusal(code: str, message: str) -> OrchestratorError:
    return OrchestratorError(code, message, 400)


class Policy:
    """The rules for one models folder. `check` is all a call must pass."""

    def __init__(self, models_dir: Path, staging_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir).absolute()
        self.staging_dir = Path(staging_dir).absolute() if staging_dir is not None else None

    def check(self, method: str, params: list[Any]) -> list[Any]:
        """The parameters to send on (the secret already taken off), or OrchestratorError
        naming what is refused. Parameters of the wrong shape go on: aria2 refuses them."""
        if method not in METHODS:
            raise refusal("unknown_method", f"No such method: {method[:80]}")
        if method in REFUSED_METHODS:
            raise refusal(
                "method_not_allowed",
                f"{method} is not allowed through this server: {REFUSED_METHODS[method]}.",
            )
        if method == "aria2.addUri" and params:
            check_links(params[0])
            options = self.download_options(params[1] if len(params) > 1 else {})
            for key in FOLLOW_OPTIONS:
                options.setdefault(key, "false")
            return [params[0], options, *params[2:]]
        if method == "aria2.changeUri" and len(params) > 3:
            check_links(params[3])
        if method == "aria2.changeOption" and len(params) > 1:
            return [params[0], self.download_options(params[1]), *params[2:]]
        if method == "aria2.changeGlobalOption" and params:
            check_global_options(params[0])
        return params

    def download_options(self, options: Any) -> dict[str, Any]:
        """One download's options, checked, with `dir` resolved."""
        if not isinstance(options, dict):
            raise refusal("invalid_options", "The options must be a JSON object of option names and values.")
        checked = {}
        for key, value in options.items():
            reason = option_refusal(key)
            if reason:
                raise refusal(
                    "option_not_allowed", f"Option {key[:60]} is not allowed through this server: {reason}."
                )
            if key in FOLLOW_OPTIONS and value != "false":
                raise refusal("torrents_disabled", f'Option {key} must be "false": {TORRENTS_OFF}.')
            if key == "dir":
                value = self.resolve_dir(value)
            elif key == "out":
                check_out(value)
            checked[key] = value
        return checked

    def resolve_dir(self, value: Any) -> str:
        """`dir` as an absolute path inside the models folder, symlinks and `..` resolved; a
        relative one is taken inside the models folder."""
        where = f"a folder inside the models folder ({self.models_dir})"
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise refusal("invalid_dir", f"Option dir must be {where}.")
        path = Path(value) if os.path.isabs(value) else self.models_dir / value
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(self.models_dir))
        if not real.is_relative_to(root):
            raise refusal(
                "dir_outside_models",
                f"Option dir {value[:100]!r} leads outside the models folder: downloads through "
                f"this server go to {where}.",
            )
        if self.staging_dir is not None and real.is_relative_to(os.path.realpath(self.staging_dir)):
            raise refusal(
                "dir_in_staging",
                f"Option dir {value[:100]!r} is the server's own staging folder; pick another folder "
                "of the models folder.",
            )
        return str(self.models_dir / real.relative_to(root))


def option_refusal(key: str) -> str | None:
    """Why an option may not be set through the gateway, or None."""
    if key in REFUSED_OPTIONS:
        return REFUSED_OPTIONS[key]
    if key.startswith("rpc-"):
        return RPC_SETTING
    if key.endswith(("-proxy-user", "-proxy-passwd")):
        return SETS_A_PROXY
    return None


def check_out(value: Any) -> None:
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise refusal(
            "invalid_out",
            "Option out must be a file name without folders ('/', '\\' or '..'); use dir for the folder.",
        )


def check_links(uris: Any) -> None:
    if not isinstance(uris, list):
        return  # aria2 refuses it
    for uri in uris:
        scheme = urlsplit(uri).scheme.lower() if isinstance(uri, str) else ""
        if scheme == "magnet":
            raise refusal("torrents_disabled", f"A magnet link is a torrent: {TORRENTS_OFF}.")
        if scheme not in LINK_SCHEMES:
            raise refusal(
                "link_not_allowed",
                f"Only {', '.join(LINK_SCHEMES)} links can be added through this server; "
                f"got {str(uri)[:60]!r}.",
            )


def check_global_options(options: Any) -> None:
    if not isinstance(options, dict):
        raise refusal("invalid_options", "The options must be a JSON object of option names and values.")
    for key in options:
        if key in GLOBAL_OPTIONS_ALLOWED:
            continue
        reason = option_refusal(key)
        if reason:
            raise refusal(
                "option_not_allowed", f"Option {key[:60]} is not allowed through this server: {reason}."
            )
        raise refusal(
            "global_option_not_allowed",
            f"Option {key[:60]} cannot be changed for the whole daemon through this server: the daemon "
            f"is shared, so changeGlobalOption may change only {', '.join(GLOBAL_OPTIONS_ALLOWED)}.",
        )


# -- redaction ----------------------------------------------------------------------------


def redact(value: Any) -> Any:
    """A copy of an answer (any shape, nested at any depth) without the secrets it holds."""
    if isinstance(value, dict):
        return {key: _redact_member(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return _URI.sub(lambda match: redact_uri(match.group(0)), value)
    return value


def _redact_member(key: str, value: Any) -> Any:
    if key == "header":
        return _redact_headers(value)
    if _secret_option(key):
        return REDACTED if value else value
    return redact(value)


def _secret_option(key: str) -> bool:
    """http-user, ftp-passwd, all-proxy-user, https-proxy-passwd, rpc-secret, load-cookies..."""
    return key.endswith(("-user", "-passwd")) or "secret" in key or "cookie" in key


def _redact_headers(value: Any) -> Any:
    """Each header keeps its name (aria2 joins several with newlines, or a list is given)."""
    if isinstance(value, list):
        return [_redact_headers(item) for item in value]
    if not isinstance(value, str):
        return REDACTED
    lines = []
    for line in value.split("\n"):
        name, colon, _ = line.partition(":")
        lines.append(f"{name.strip()}: {REDACTED}" if colon else (REDACTED if line else line))
    return "\n".join(lines)


def redact_uri(uri: str) -> str:
    """The URI with the user and password in it, and the values of secret query parameters,
    replaced by `redacted`; anything else is left as it was."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # an unreadable authority: hide it all
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query, fragment = _redact_pairs(parts.query), _redact_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_pairs(text: str) -> str:
    if "=" not in text:
        return text
    pairs = []
    for pair in text.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}={REDACTED}" if equals and secret_parameter(unquote_plus(name)) else pair)
    return "&".join(pairs)


def secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SECRET_PARAMS
        or lowered.startswith(_SECRET_PARAM_PREFIXES)
        or any(word in lowered for word in _SECRET_PARAM_WORDS)
    )
