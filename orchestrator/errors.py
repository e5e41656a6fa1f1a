"""The one error type the app shows to people: a machine code plus a sentence."""


class OrchestratorError(Exception):
    """An error a person can act on.

    `code` is stable for programs; `message` is written for a person and never holds a
    secret. `status` is the HTTP status the REST API answers with.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def http_error(status: int, what: str = "The server") -> OrchestratorError:
    """A person-readable error for an HTTP status met while fetching a file."""
    if status == 404 or status == 410:
        return OrchestratorError(
            "origin_not_found", f"{what} says the file does not exist (HTTP {status}).", 502
        )
    if status in (401, 403):
        return OrchestratorError(
            "origin_forbidden",
            f"{what} refused access (HTTP {status}); the link may need a login or a token, "
            "or it has expired.",
            502,
        )
    if status == 429:
        return OrchestratorError(
            "origin_rate_limited", f"{what} is rate-limiting downloads (HTTP 429); try later.", 502
        )
    if status >= 500:
        return OrchestratorError("origin_error", f"{what} failed with HTTP {status}; try again later.", 502)
    return OrchestratorError("origin_error", f"{what} answered HTTP {status}.", 502)
