"""Identifying library files on CivitAI by hash, and update checks, against the fake CivitAI."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.library import LibraryIndex, LookupSettings, Source, check_updates, identify, scan
from tests.fakes.civitai import TOKEN, FakeCivitai, File, Version
from tests.fakes.service import Request, SignedStorage


def blob(seed: int, size: int = 2048) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def storage() -> Iterator[SignedStorage]:
    server = SignedStorage("127.0.0.2")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(storage: SignedStorage) -> Iterator[FakeCivitai]:
    server = FakeCivitai(storage, "127.0.0.3").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as made:
        yield made


class Sleeps(list[float]):
    """Records the waits asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def fast(**changes: Any) -> LookupSettings:
    return LookupSettings(**{"pause": 0.0, "backoff": 0.01, **changes})


def library(loras: Path, index: LibraryIndex, *files: tuple[str, bytes]) -> None:
    for name, data in files:
        (loras / name).write_bytes(data)
    scan(index, [("lora", loras)])


def publish(
    api: FakeCivitai, model_id: int, version_id: int, data: bytes, name: str = "film.safetensors", **kw: Any
) -> Version:
    if model_id not in api.models:
        api.add_model(model_id, f"Model {model_id}", "LORA")
    return api.add_version(model_id, version_id, [File(name, data, primary=True)], preview=False, **kw)


def hash_calls(api: FakeCivitai) -> list[Request]:
    return api.seen("/api/v1/model-versions/by-hash")


def test_known_files_are_identified_in_one_bulk_call_and_misses_remembered(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    film, anime, mine = blob(1), blob(2), blob(3)
    publish(api, 100, 200, film, name="film_v2.safetensors")
    publish(api, 300, 400, anime, name="anime.safetensors")
    library(
        loras, index, ("film.safetensors", film), ("anime.safetensors", anime), ("mine.safetensors", mine)
    )

    report = identify(index, session, api.base_url, settings=fast())

    assert sorted((h.model_id, h.version_id) for h in report.hits) == [(100, 200), (300, 400)]
    assert report.misses == [sha(mine)] and report.errors == [] and report.stopped is None
    calls = hash_calls(api)
    assert [(c.method, c.path) for c in calls] == [("POST", "/api/v1/model-versions/by-hash")]
    assert sorted(api.bulk_bodies[0]) == sorted(h.upper() for h in (sha(film), sha(anime), sha(mine)))
    assert all(c.header("Authorization") is None for c in api.requests)  # no token set, none sent
    hit = next(h for h in report.hits if h.version_id == 200)
    assert hit.record["model"]["name"] == "Model 100" and [f.name for f in hit.files] == ["film.safetensors"]
    record = index.by_sha256(sha(film))[0]
    assert record.source == Source.civitai(100, 200, found_by="lookup") and record.title == "Model 100"
    assert record.lookup is not None and record.lookup.state == "hit"
    miss = index.lookup(sha(mine))
    assert miss is not None and miss.state == "miss"

    again = identify(index, session, api.base_url, settings=fast())

    assert again.asked == 0 and len(hash_calls(api)) == 1  # the miss is not asked again today


def test_the_token_goes_as_a_bearer_header_when_set(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, ("a.safetensors", blob(5)))

    identify(index, session, api.base_url, TOKEN, settings=fast())

    assert [c.header("Authorization") for c in hash_calls(api)] == [f"Bearer {TOKEN}"]
    assert not api.saw_text(f"token={TOKEN}")


def test_a_rejected_token_is_named(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, ("a.safetensors", blob(6)))

    report = identify(index, session, api.base_url, "not-my-token", settings=fast())

    assert [e.code for e in report.errors] == ["civitai_token_rejected"]
    assert "not-my-token" not in report.errors[0].message


def test_hashes_go_in_batches_of_at_most_100(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, *((f"m{n}.safetensors", blob(1000 + n, 64)) for n in range(150)))

    report = identify(index, session, api.base_url, settings=fast())

    assert [len(body) for body in api.bulk_bodies] == [100, 50]
    assert len(report.misses) == 150 and report.requests == 2


def test_a_bulk_answer_is_matched_by_file_hash_nulls_skipped_and_own_file_beats_a_vae(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    vae, model = blob(10), blob(11)
    publish(api, 50, 60, vae, name="kl-f8.safetensors")
    publish(api, 70, 80, model, name="model.safetensors", vae_version=60)  # lists the VAE as type "VAE"
    api.bulk_nulls = True
    library(loras, index, ("vae.safetensors", vae), ("model.safetensors", model))

    report = identify(index, session, api.base_url, settings=fast())

    found = {h.sha256: h.version_id for h in report.hits}
    assert found == {sha(vae): 60, sha(model): 80}
    assert report.errors == []


def test_a_refused_bulk_call_falls_back_to_one_get_per_hash(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    film = blob(20)
    publish(api, 100, 200, film)
    api.bulk_refused = 404
    library(loras, index, ("film.safetensors", film), ("mine.safetensors", blob(21)))

    report = identify(index, session, api.base_url, settings=fast())

    assert report.bulk_refused
    assert [h.version_id for h in report.hits] == [200] and report.misses == [sha(blob(21))]
    gets = [c.path for c in hash_calls(api) if c.method == "GET"]
    assert sorted(gets) == sorted(
        f"/api/v1/model-versions/by-hash/{h.upper()}" for h in (sha(film), sha(blob(21)))
    )


def test_a_429_waits_for_its_retry_after_and_asks_again(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    film = blob(30)
    publish(api, 100, 200, film)
    library(loras, index, ("film.safetensors", film))
    api.rate_limits = ["7"]
    sleeps = Sleeps()

    report = identify(index, session, api.base_url, settings=fast(sleep=sleeps))

    assert 7.0 in sleeps
    assert [h.version_id for h in report.hits] == [200] and len(hash_calls(api)) == 2


def test_endless_429s_stop_the_run_with_a_clear_error(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, ("film.safetensors", blob(31)))
    api.rate_limits = ["3600"]  # longer than the run is willing to wait

    report = identify(index, session, api.base_url, settings=fast(sleep=Sleeps(), max_wait=60))

    assert report.stopped is not None and report.stopped.code == "civitai_rate_limited"
    failed = index.lookup(sha(blob(31)))
    assert failed is not None and failed.code == "civitai_rate_limited"


def test_a_passing_5xx_is_retried(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    film = blob(40)
    publish(api, 100, 200, film)
    library(loras, index, ("film.safetensors", film))
    api.errors_ahead = [500]

    report = identify(index, session, api.base_url, settings=fast())

    assert [h.version_id for h in report.hits] == [200] and report.stopped is None


def test_repeated_5xx_stop_the_run(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, *((f"m{n}.safetensors", blob(2000 + n, 64)) for n in range(150)))
    api.errors_ahead = [500, 502, 503, 500, 500, 500]

    report = identify(index, session, api.base_url, settings=fast(batch_size=100, max_server_errors=3))

    assert report.stopped is not None and report.stopped.code == "civitai_unavailable"
    assert len(hash_calls(api)) == 3  # the second batch is never sent
    assert [(e.code, len(e.hashes)) for e in report.errors] == [("civitai_unavailable", 100)]
    assert len(index.pending_lookups()) == 50  # the unsent batch waits for the next run


@pytest.mark.parametrize(
    ("fault", "code"),
    [("cloudflare", "civitai_blocked"), ("garbage", "civitai_bad_answer"), ("slow", "civitai_timeout")],
)
def test_html_bad_json_and_timeouts_are_errors_for_the_batch(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session, fault: str, code: str
) -> None:
    library(loras, index, ("film.safetensors", blob(50)))
    settings = fast()
    if fault == "cloudflare":
        api.cloudflare = True
    elif fault == "garbage":
        api.garbage = True
    else:
        api.delay = 2.0
        settings = fast(timeout=(2.0, 0.3))

    report = identify(index, session, api.base_url, settings=settings)

    assert [e.code for e in report.errors] == [code] and report.hits == [] and report.misses == []
    assert len(report.errors[0].message) > 30
    stored = index.lookup(sha(blob(50)))
    assert stored is not None and (stored.state, stored.code) == ("error", code)


def test_an_unreachable_civitai_is_an_error_not_a_crash(
    loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    library(loras, index, ("film.safetensors", blob(55)))

    report = identify(index, session, "http://127.0.0.3:9", settings=fast())

    assert [e.code for e in report.errors] == ["civitai_unreachable"]


# -- update checks ---------------------------------------------------------------------------------


def test_update_check_names_the_newer_version(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    old, other = blob(60), blob(61)
    publish(api, 100, 200, old, name="film_v1.safetensors", published_at="2024-01-01T00:00:00.000Z")
    publish(api, 100, 201, blob(62), name="film_v2.safetensors", published_at="2024-03-01T00:00:00.000Z")
    publish(api, 300, 400, other, name="anime.safetensors", published_at="2024-02-01T00:00:00.000Z")
    library(loras, index, ("film_v1.safetensors", old), ("anime.safetensors", other))
    identify(index, session, api.base_url, settings=fast())

    report = check_updates(index, session, api.base_url, settings=fast())

    assert report.up_to_date == [300] and report.gone == [] and not report.errors
    (update,) = report.updates
    assert (update.model_id, update.installed_version_id, update.latest_version_id) == (100, 200, 201)
    assert update.latest_version_name == "v1.0" and update.latest_published_at == "2024-03-01T00:00:00.000Z"
    assert [f.name for f in update.files] == ["film_v1.safetensors"]
    assert sorted(c.path for c in api.seen("/api/v1/models/")) == ["/api/v1/models/100", "/api/v1/models/300"]

    cached = check_updates(index, session, api.base_url, settings=fast())

    assert [u.latest_version_id for u in cached.updates] == [201] and cached.requests == 0
    fresh = check_updates(index, session, api.base_url, max_age=0, settings=fast())
    assert fresh.requests == 2


def test_an_installed_newest_version_or_a_deleted_model_is_no_update(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    (loras / "newest.safetensors").write_bytes(b"n")
    (loras / "deleted.safetensors").write_bytes(b"d")
    index.record_download(loras, "lora", Path("newest.safetensors"), sha(b"n"), Source.civitai(100, 201))
    index.record_download(loras, "lora", Path("deleted.safetensors"), sha(b"d"), Source.civitai(999, 1))
    publish(api, 100, 200, blob(70), name="a.safetensors")
    publish(api, 100, 201, blob(71), name="b.safetensors")

    report = check_updates(index, session, api.base_url, settings=fast())

    assert report.updates == [] and report.up_to_date == [100] and report.gone == [999]


def test_a_version_listed_first_but_published_earlier_is_not_newer(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    installed = blob(80)
    publish(api, 100, 200, installed, name="b.safetensors", published_at="2024-05-01T00:00:00.000Z")
    publish(api, 100, 150, blob(81), name="a.safetensors", published_at="2024-01-01T00:00:00.000Z")
    library(loras, index, ("b.safetensors", installed))
    identify(index, session, api.base_url, settings=fast())

    report = check_updates(index, session, api.base_url, settings=fast())

    assert report.updates == [] and report.up_to_date == [100]


def test_update_check_errors_are_per_model(
    api: FakeCivitai, loras: Path, index: LibraryIndex, session: requests.Session
) -> None:
    (loras / "x.safetensors").write_bytes(b"x")
    index.record_download(loras, "lora", Path("x.safetensors"), sha(b"x"), Source.civitai(100, 200))
    api.cloudflare = True

    report = check_updates(index, session, api.base_url, settings=fast())

    assert [(model, error.code) for model, error in report.errors.items()] == [(100, "civitai_blocked")]
    assert all(c.header("Authorization") is None for c in api.requests)
