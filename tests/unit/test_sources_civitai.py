"""CivitAI links: every form people paste, file choice, tokens kept to the API, each refusal named."""

from __future__ import annotations

import hashlib
import json

import pytest

from orchestrator import sources
from orchestrator.errors import OrchestratorError
from orchestrator.policy import OPEN, Policy
from orchestrator.sources import Credentials, civitai
from orchestrator.sources.civitai import Link
from tests.fakes.civitai import TOKEN, FakeCivitai, File
from tests.fakes.service import SignedStorage

DATA = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def storage():
    with SignedStorage("127.0.0.2") as server:
        yield server


@pytest.fixture
def api(storage, monkeypatch):
    with FakeCivitai(storage, "127.0.0.3") as server:
        monkeypatch.setenv("CIVITAI_BASE_URL", server.base_url)
        monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
        server.add_model(100, "Film Look", "LORA")
        server.add_version(100, 200, [File("film.safetensors", DATA, primary=True)], name="v2")
        yield server


def code_of(call, *args) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args)
    assert caught.value.message and len(caught.value.message) > 20
    return caught.value.code


def resolve(url: str, token: str | None = None):
    return civitai.resolve(url, Credentials(civitai=token), OPEN)


# -- the forms people paste ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("https://civitai.com/models/4201", Link(4201)),
        ("https://civitai.com/models/4201/realistic-vision", Link(4201)),
        ("https://www.civitai.com/models/4201/realistic-vision?modelVersionId=130072", Link(4201, 130072)),
        ("https://civitai.red/models/4201?modelVersionId=130072", Link(4201, 130072)),
        ("civitai.com/models/4201", Link(4201)),
        ("https://civitai.com/api/download/models/130072", Link(None, 130072)),
        (
            "https://civitai.com/api/download/models/130072?type=Model&format=SafeTensor&size=pruned&fp=fp16",
            Link(None, 130072, {"type": "Model", "format": "SafeTensor", "size": "pruned", "fp": "fp16"}),
        ),
        ("https://civitai.com/api/download/models/130072?fileId=555", Link(None, 130072, {}, 555)),
        ("https://civitai.com/api/v1/model-versions/130072", Link(None, 130072)),
        ("https://civitai.com/api/v1/models/4201", Link(4201)),
        ("urn:air:sd1:checkpoint:civitai:4201@130072", Link(4201, 130072)),
        ("urn:air:sdxl:lora:civitai:1@2.safetensors", Link(1, 2, {"format": "SafeTensor"})),
        ("URN:AIR:flux1:lora:civitai:1@2", Link(1, 2)),
        ("urn:air:sdxl:lora:civitai:328553", Link(328553)),
        ("4201@130072", Link(4201, 130072)),
    ],
)
def test_every_form_names_a_model_or_version(text: str, link: Link) -> None:
    assert civitai.matches(text)
    assert civitai.parse(text) == link
    assert sources.validate_url(f"  {text} ") == text
    assert sources.identify(text) == "civitai"


@pytest.mark.parametrize(
    "text",
    [
        "https://civitai.com/",
        "https://civitai.com/images/12345",
        "https://civitai.com/user/someone/models",
        "https://civitai.com/models/abc",
        "https://civitai.com/models/4201?modelVersionId=latest",
        "https://civitai.com/api/download/models/130072?fileId=x",
    ],
)
def test_civitai_links_that_name_no_model_are_refused_at_once(text: str) -> None:
    assert code_of(sources.validate_url, text) == "civitai_bad_link"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("urn:air:sdxl:lora:huggingface:foo@1", "unsupported_scheme"),
        ("urn:air:sdxl:lora:civitai:abc@1", "unsupported_scheme"),
        ("4201@", "invalid_url"),
        ("@130072", "invalid_url"),
        ("h.example/m.safetensors", "invalid_url"),
    ],
)
def test_near_misses_keep_their_old_errors(text: str, code: str) -> None:
    assert code_of(sources.validate_url, text) == code


def test_a_token_in_the_link_is_refused_without_repeating_it() -> None:
    with pytest.raises(OrchestratorError) as caught:
        sources.validate_url("https://civitai.com/api/download/models/1?type=Model&token=abc123secret")
    assert caught.value.code == "token_in_link"
    assert "abc123secret" not in caught.value.message


def test_other_hosts_are_not_civitai() -> None:
    assert not civitai.matches("https://notcivitai.com/models/1")
    assert not civitai.matches("https://civitai.com.evil.example/models/1")
    assert sources.identify("https://example.com/models/1") == "direct"


def test_a_configured_endpoint_is_civitai_only_on_its_own_port(monkeypatch) -> None:
    """A mirror or a local CivitAI on one port of a host: another service there is a plain link."""
    monkeypatch.setenv("CIVITAI_BASE_URL", "http://10.1.2.3:8080")
    assert sources.identify("http://10.1.2.3:8080/api/download/models/1") == "civitai"
    assert sources.identify("10.1.2.3:8080/models/1") == "civitai"
    assert sources.identify("http://10.1.2.3:9000/files/model.safetensors") == "direct"
    assert sources.identify("http://10.1.2.3/files/model.safetensors") == "direct"
    assert not civitai.matches("ftp://10.1.2.3:8080/api/download/models/1")  # its port, not its scheme


# -- choosing the file ---------------------------------------------------------------------------


def version_with(*files: dict) -> dict:
    return {"id": 7, "name": "v1", "model": {"name": "M"}, "files": list(files)}


PRUNED = {
    "id": 1,
    "name": "a-pruned.safetensors",
    "type": "Model",
    "primary": False,
    "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
}
FULL = {
    "id": 2,
    "name": "a-full.safetensors",
    "type": "Model",
    "primary": True,
    "metadata": {"format": "SafeTensor", "size": "full", "fp": "fp32"},
}
CKPT = {
    "id": 3,
    "name": "a.ckpt",
    "type": "Model",
    "primary": False,
    "metadata": {"format": "PickleTensor", "size": "full", "fp": "fp32"},
}
VAE = {"id": 4, "name": "a.vae.safetensors", "type": "VAE", "primary": False, "metadata": {}}


def test_the_primary_file_wins_even_when_it_is_not_first() -> None:
    assert civitai.pick_file(version_with(PRUNED, CKPT, FULL), Link(1))["name"] == "a-full.safetensors"


def test_without_a_primary_the_first_file() -> None:
    assert civitai.pick_file(version_with(CKPT, PRUNED), Link(1))["name"] == "a.ckpt"


@pytest.mark.parametrize(
    ("link", "name"),
    [
        (Link(None, 7, {"format": "PickleTensor"}), "a.ckpt"),
        (Link(None, 7, {"format": "safetensor", "size": "pruned"}), "a-pruned.safetensors"),
        (Link(None, 7, {"type": "VAE"}), "a.vae.safetensors"),
        (Link(None, 7, {"fp": "fp32"}), "a-full.safetensors"),
        (Link(None, 7, {}, 3), "a.ckpt"),
    ],
)
def test_the_link_can_name_another_file(link: Link, name: str) -> None:
    assert civitai.pick_file(version_with(PRUNED, FULL, CKPT, VAE), link)["name"] == name


def test_a_filter_that_matches_nothing_lists_what_there_is() -> None:
    with pytest.raises(OrchestratorError) as caught:
        civitai.pick_file(version_with(PRUNED, FULL), Link(None, 7, {"format": "GGUF"}))
    assert caught.value.code == "civitai_file_not_found"
    assert "format=GGUF" in caught.value.message
    assert "a-pruned.safetensors" in caught.value.message and "a-full.safetensors" in caught.value.message


def test_an_unknown_file_id() -> None:
    assert code_of(civitai.pick_file, version_with(PRUNED), Link(None, 7, {}, 99)) == "civitai_file_not_found"


def test_a_version_without_files() -> None:
    assert code_of(civitai.pick_file, version_with(), Link(1)) == "civitai_no_files"


# -- resolving against the fake API --------------------------------------------------------------


def test_model_link_resolves_the_newest_version_to_a_signed_url(api: FakeCivitai, storage) -> None:
    api.add_version(100, 201, [File("film-v3.safetensors", DATA[::-1], primary=True)], name="v3")
    resolved = resolve("https://civitai.com/models/100/film-look")
    assert resolved.source == "civitai"
    assert resolved.filename == "film-v3.safetensors"
    assert resolved.metadata["version_id"] == 201
    [url] = resolved.urls
    assert url.startswith(storage.base_url + "/file/")
    assert "token" not in url.lower()


def test_metadata_describes_the_model(api: FakeCivitai) -> None:
    resolved = resolve("https://civitai.com/models/100?modelVersionId=200")
    assert resolved.size == len(DATA)
    assert resolved.sha256 == SHA
    assert resolved.model_type == "lora"
    info = resolved.metadata
    assert {k: info[k] for k in ("model_name", "version_name", "model_type", "base_model", "file_name")} == {
        "model_name": "Film Look",
        "version_name": "v2",
        "model_type": "LORA",
        "base_model": "SDXL 1.0",
        "file_name": "film.safetensors",
    }
    assert info["trained_words"] == ["vintage photo", "film grain"]
    assert (info["size"], info["sha256"], info["nsfw"], info["model_id"], info["version_id"]) == (
        len(DATA),
        SHA,
        False,
        100,
        200,
    )
    assert info["preview_url"].endswith("/preview.jpeg")  # the video is skipped
    record = info["civitai"]
    assert record["modelId"] == 100 and record["id"] == 200
    assert record["files"][0]["hashes"]["SHA256"] == SHA.upper()
    assert len(record["description"]) <= civitai.DESCRIPTION_LIMIT  # kept for A1111's card, short
    json.dumps(info)  # it is stored and sent as JSON


@pytest.mark.parametrize(
    ("civitai_type", "ours"),
    [
        ("Checkpoint", "checkpoint"),
        ("LORA", "lora"),
        ("LoCon", "lora"),
        ("DoRA", "lora"),
        ("TextualInversion", "embedding"),
        ("VAE", "vae"),
        ("Upscaler", "upscaler"),
        ("Controlnet", "controlnet"),
        ("Hypernetwork", "hypernetwork"),
        ("MotionModule", "motion_module"),
        ("Poses", None),
        ("Wildcards", None),
        ("Other", None),
    ],
)
def test_civitai_types_map_to_folders(api: FakeCivitai, civitai_type: str, ours: str | None) -> None:
    api.add_model(300, "Typed", civitai_type)
    api.add_version(300, 301, [File("t.safetensors", DATA, primary=True)])
    assert resolve("300@301").model_type == ours


def test_a_size_that_is_not_whole_bytes_is_not_trusted() -> None:
    assert civitai._bytes(2082642.5) == 2132625920
    assert civitai._bytes(1.3) is None
    assert civitai._bytes(None) is None


def test_the_token_goes_to_the_api_as_bearer_and_nowhere_else(api: FakeCivitai, storage) -> None:
    api.versions[200].needs_token = True
    resolved = resolve("https://civitai.com/api/download/models/200", TOKEN)
    for request in api.requests:
        assert request.header("Authorization") == f"Bearer {TOKEN}"
        assert "token" not in request.query
    assert storage.requests == []  # the source never touches storage; the engine will, without a token
    assert storage.base_url in resolved.urls[0]


def test_the_token_can_come_from_the_environment(api: FakeCivitai, monkeypatch) -> None:
    api.versions[200].needs_token = True
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    assert resolve("100@200").filename == "film.safetensors"
    assert api.downloads()[-1].header("Authorization") == f"Bearer {TOKEN}"


def test_the_download_link_of_the_chosen_file_is_used(api: FakeCivitai) -> None:
    api.add_version(
        100,
        210,
        [File("f.safetensors", DATA, primary=True), File("f.ckpt", DATA[:1000], format="PickleTensor")],
    )
    resolved = resolve("https://civitai.com/api/download/models/210?format=PickleTensor")
    assert resolved.filename == "f.ckpt"
    assert resolved.size == 1000
    assert api.downloads()[-1].query["format"] == "PickleTensor"


def version_needing(api: FakeCivitai, **options) -> str:
    api.add_version(100, 250, [File("locked.safetensors", DATA, primary=True)], **options)
    return "https://civitai.com/models/100?modelVersionId=250"


@pytest.mark.parametrize(
    ("options", "token", "code"),
    [
        ({"needs_token": True, "unauthenticated": "json"}, None, "civitai_token_required"),
        ({"needs_token": True, "unauthenticated": "login"}, None, "civitai_token_required"),
        ({"needs_token": True}, "wrong-token", "civitai_token_rejected"),
        ({}, "wrong-token", "civitai_token_rejected"),
        ({"early_access": True}, TOKEN, "civitai_early_access"),
        ({"early_access": True}, None, "civitai_early_access"),
        ({"downloads_disabled": True}, TOKEN, "civitai_downloads_disabled"),
    ],
)
def test_each_refusal_has_its_own_error(api: FakeCivitai, storage, options, token, code) -> None:
    url = version_needing(api, **options)
    with pytest.raises(OrchestratorError) as caught:
        resolve(url, token)
    assert caught.value.code == code
    if token:
        assert token not in caught.value.message
    assert storage.requests == []
    # the login page itself is never fetched with the token
    assert not [r for r in api.requests if r.path.startswith("/login")]


def test_token_required_says_where_to_get_one(api: FakeCivitai) -> None:
    with pytest.raises(OrchestratorError) as caught:
        resolve(version_needing(api, needs_token=True))
    assert "civitai.com/user/account" in caught.value.message
    assert "CIVITAI_TOKEN" in caught.value.message


def test_early_access_says_until_when(api: FakeCivitai) -> None:
    with pytest.raises(OrchestratorError) as caught:
        resolve(version_needing(api, early_access=True))
    assert "2030-01-01" in caught.value.message


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://civitai.com/models/999", "civitai_not_found"),
        ("https://civitai.com/models/100?modelVersionId=999", "civitai_not_found"),
        ("https://civitai.com/api/download/models/200?format=GGUF", "civitai_file_not_found"),
        ("https://civitai.com/api/download/models/200?fileId=1", "civitai_file_not_found"),
    ],
)
def test_missing_things(api: FakeCivitai, url: str, code: str) -> None:
    assert code_of(resolve, url) == code


def test_a_model_without_versions(api: FakeCivitai) -> None:
    api.add_model(400, "Empty")
    assert code_of(resolve, "https://civitai.com/models/400") == "civitai_no_files"


def test_a_version_without_files_through_the_api(api: FakeCivitai) -> None:
    api.add_version(100, 260, [])
    assert code_of(resolve, "100@260") == "civitai_no_files"


@pytest.mark.parametrize(
    ("status", "code"), [(500, "origin_error"), (503, "origin_error"), (429, "origin_rate_limited")]
)
def test_api_failures(api: FakeCivitai, status: int, code: str) -> None:
    api.failing = status
    assert code_of(resolve, "100@200") == code


def test_garbage_json(api: FakeCivitai) -> None:
    api.garbage = True
    with pytest.raises(OrchestratorError) as caught:
        resolve("100@200")
    assert caught.value.code == "origin_error"
    assert "JSON" in caught.value.message


def test_an_unreachable_api(monkeypatch) -> None:
    monkeypatch.setenv("CIVITAI_BASE_URL", "http://127.0.0.3:9")  # the discard port: nothing listens
    assert code_of(resolve, "100@200") == "unreachable"


# -- sidecars ------------------------------------------------------------------------------------


def test_the_model_is_described_by_its_record_and_its_preview(api: FakeCivitai, storage) -> None:
    resolved = resolve("100@200")
    said = civitai.describe(resolved.metadata, OPEN)
    assert said is not None and said.kind == "civitai"
    record = said.record
    assert (record["modelId"], record["id"], record["baseModel"]) == (100, 200, "SDXL 1.0")
    assert record["trainedWords"] == ["vintage photo", "film grain"]
    assert said.file_id == record["files"][0]["id"]
    assert said.preview is not None and said.preview[0] == "image/jpeg"
    assert said.preview[1].startswith(b"\xff\xd8")
    assert not [r for r in storage.requests if r.header("Authorization")]


def test_a_missing_preview_leaves_only_the_record(api: FakeCivitai, storage) -> None:
    resolved = resolve("100@200")
    storage.public.clear()
    said = civitai.describe(resolved.metadata, OPEN)
    assert said is not None and said.preview is None and said.record["id"] == 200
    assert civitai.describe({}, OPEN) is None


def test_the_preview_fetch_goes_through_the_policy(api: FakeCivitai, storage) -> None:
    """The API host counts as public here; the storage host the preview lives on does not."""
    resolved = resolve("100@200")
    only_api = Policy(block_private=True, allowed=frozenset({"127.0.0.3"}))
    before = len(storage.requests)
    guarded = civitai.describe(resolved.metadata, only_api)
    assert guarded is not None and guarded.preview is None
    assert len(storage.requests) == before  # the preview's host was never contacted
    opened = civitai.describe(resolved.metadata, OPEN)
    assert opened is not None and opened.preview is not None
