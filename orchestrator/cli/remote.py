"""`get` through a running server: submit each link over REST, follow the jobs until they end.

The server does the work, so the page sees these downloads too. Ctrl-C pauses the
jobs this command started (their partial data stays on the server's disk); jobs
someone else started and we only watched are left running.
"""

from __future__ import annotations

import time
from typing import Any

from ..sources import Credentials
from .items import Item, Outcome, RunResult, settled
from .progress import Progress
from .server import ServerClient, ServerError, ServerGone

POLL_EVERY = 0.5
GIVE_UP_AFTER = 20  # failed polls in a row (about 10 s) before the server counts as gone


class RemoteRun:
    def __init__(self, client: ServerClient, progress: Progress) -> None:
        self.client = client
        self.progress = progress
        self.items: dict[int, Item] = {}
        self.latest: dict[int, dict[str, Any]] = {}  # the newest job object per request
        self.owned: set[str] = set()  # job ids this command created or resumed
        self.outcomes: dict[int, Outcome] = {}

    def run(self, items: list[Item], credentials: Credentials, overwrite: bool) -> RunResult:
        try:
            for item in items:
                self._submit(item, credentials, overwrite)
            self._follow()
        except KeyboardInterrupt:
            self._stop()
            return RunResult(list(self.outcomes.values()), interrupted=True)
        return RunResult(list(self.outcomes.values()))

    def _submit(self, item: Item, credentials: Credentials, overwrite: bool) -> None:
        try:
            job, created = self.client.submit(item.request(credentials, overwrite))
            if not created and job["state"] == "paused":
                # the same link, stopped earlier (e.g. by Ctrl-C): asking again means go on
                job, created = self.client.act(job["id"], "resume"), True
        except ServerError as error:
            self.outcomes[item.order] = Outcome.refused(item, error.message)
            return
        self.items[item.order] = item
        if created:
            self.owned.add(job["id"])
        self._update(item.order, job)

    def _follow(self) -> None:
        failures = 0
        while pending := [key for key in self.latest if key not in self.outcomes]:
            time.sleep(POLL_EVERY)
            for key in pending:
                try:
                    job = self.client.job(self.latest[key]["id"])
                except ServerGone as gone:
                    failures += 1
                    if failures >= GIVE_UP_AFTER:
                        self._give_up(pending, gone.message)
                    break
                except ServerError as error:  # e.g. the job vanished from the server's list
                    self.outcomes[key] = Outcome.refused(self.items[key], error.message)
                    continue
                failures = 0
                self._update(key, job)

    def _update(self, key: int, job: dict[str, Any]) -> None:
        self.latest[key] = job
        self.progress.show(key, job)
        if settled(job):
            self.outcomes[key] = Outcome.from_job(self.items[key], job)

    def _give_up(self, keys: list[int], why: str) -> None:
        for key in keys:
            self.outcomes[key] = Outcome.refused(self.items[key], f"lost the server: {why}")

    def _stop(self) -> None:
        """Ctrl-C: pause what we started, so its bytes wait on the server for a resume."""
        for key, job in self.latest.items():
            if key in self.outcomes:
                continue
            note = None
            if job["id"] in self.owned:
                try:
                    job = self.client.act(job["id"], "pause")
                except ServerError:
                    note = f"Still running on the server; `orchestrator pause {job['id']}` stops it."
            else:
                note = "Started elsewhere; still running on the server."
            outcome = Outcome.from_job(self.items[key], job, interrupted=True)
            outcome.error = note or outcome.error
            self.outcomes[key] = outcome
