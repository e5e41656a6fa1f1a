"""Hugging Face links: the forms accepted, the HEAD that describes a file, the Hub's errors in words."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator import sources
from orchestrator.errors import OrchestratorError
from orchestrator.policy import OPEN
from orchestrator.sources import Credentials, huggingface
from orchestrator.sources.huggingface import Link
from tests.fakes.huggingface import TOKEN, FakeHub
from tests.fakes.service import Reply, Request, Service, SignedStorage

DATA = bytes(range(256)) * 80
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def storage():
    with SignedStorage("127.0.0.5") as server:
        yield server


@pytest.fixture
def hub(storage, monkeypatch):
    with FakeHub(storage, "127.0.0.4") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        server.add_repo("acme/sd-models")
        server.add_file("acme/sd-models", "unet/model.safetensors", DATA)
        server.add_file("acme/sd-models", "config.json", b'{"a": 1}', lfs=False)
        yield server


def code_of(call, *args) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args)
    assert len(caught.value.message) > 20
    return caught.value.code


def resolve(url: str, token: str | None = None):
    return huggingface.resolve(url, Credentials(huggingface=token), OPEN)


# -- forms ---------------------------------------------------------------------------------------

M = "model"
HF = "https://huggingface.co"


@pytest.mark.parametrize(
    ("text", "link"),
    [
        (f"{HF}/acme/sd/resolve/main/model.safetensors", Link(M, "acme/sd", "main", "model.safetensors")),
        (f"{HF}/acme/sd/blob/main/unet/x.safetensors", Link(M, "acme/sd", "main", "unet/x.safetensors")),
        (f"{HF}/acme/sd/resolve/main/x.bin?download=true", Link(M, "acme/sd", "main", "x.bin")),
        (f"{HF}/acme/sd/raw/v1.0/README.md", Link(M, "acme/sd", "v1.0", "README.md")),
        ("https://hf.co/acme/sd/resolve/refs%2Fpr%2F3/x.bin", Link(M, "acme/sd", "refs/pr/3", "x.bin")),
        (f"{HF}/gpt2/resolve/main/config.json", Link(M, "gpt2", "main", "config.json")),
        (f"{HF}/datasets/acme/imgs/resolve/main/a/b.zip", Link("dataset", "acme/imgs", "main", "a/b.zip")),
        (f"{HF}/spaces/acme/demo/resolve/main/w.pth", Link("space", "acme/demo", "main", "w.pth")),
        (f"{HF}/acme/sd/resolve/main/my%20model.bin", Link(M, "acme/sd", "main", "my model.bin")),
        ("hf://acme/sd/unet/x.safetensors", Link(M, "acme/sd", "main", "unet/x.safetensors")),
        ("hf://acme/sd@fp16/x.safetensors", Link(M, "acme/sd", "fp16", "x.safetensors")),
        ("hf://datasets/acme/imgs/train.parquet", Link("dataset", "acme/imgs", "main", "train.parquet")),
        ("acme/sd/x.safetensors", Link(M, "acme/sd", "main", "x.safetensors")),
        ("stabilityai/sdxl-vae/vae.safetensors", Link(M, "stabilityai/sdxl-vae", "main", "vae.safetensors")),
        ("acme/sd.v2@dev/unet/x.bin", Link(M, "acme/sd.v2", "dev", "unet/x.bin")),
    ],
)
def test_accepted_forms(text: str, link: Link) -> None:
    assert huggingface.matches(text)
    assert huggingface.parse(text) == link
    assert sources.validate_url(text) == text
    assert sources.identify(text) == "huggingface"


@pytest.mark.parametrize(
    "text",
    [
        "https://huggingface.co/acme/sd",
        "https://huggingface.co/acme/sd/tree/main",
        "https://huggingface.co/",
        "https://hf.co/acme/sd/resolve/main",
        "hf://acme",
        "hf://acme/sd",
    ],
)
def test_hub_links_that_name_no_file_are_refused_at_once(text: str) -> None:
    assert code_of(sources.validate_url, text) == "hf_bad_link"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("h.example/m.safetensors", "invalid_url"),  # two parts: not a repo file
        ("example.com/acme/x.safetensors", "invalid_url"),  # an owner has no dot: this is a host
        ("acme/sd/README", "invalid_url"),  # no extension: not taken for a file
        ("//h.example/m.safetensors", "invalid_url"),
    ],
)
def test_shorthand_does_not_swallow_other_mistakes(text: str, code: str) -> None:
    assert code_of(sources.validate_url, text) == code


def test_resolve_path_encodes_revision_and_path() -> None:
    link = Link("dataset", "acme/x", "refs/pr/1", "a b/c.bin")
    assert link.resolve_path() == "/datasets/acme/x/resolve/refs%2Fpr%2F1/a%20b/c.bin"


def test_pin_names_the_commit_a_download_began_with(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = sources.pin("hf://datasets/acme/x@v1/a b/c.bin", {"commit": commit})
    assert pinned == f"https://huggingface.co/datasets/acme/x/resolve/{commit}/a%20b/c.bin"
    assert huggingface.parse(pinned) == Link("dataset", "acme/x", commit, "a b/c.bin")
    # nothing to pin to: the link stays as it was
    for metadata in ({}, {"commit": None}, {"commit": "main"}, {"commit": "../../x" * 6}):
        assert sources.pin("acme/x/c.bin", metadata) == "acme/x/c.bin"
    # other sources' links already name one file
    assert sources.pin("https://files.example/m.safetensors", {"commit": commit}) == (
        "https://files.example/m.safetensors"
    )


# -- the HEAD --------------------------------------------------------------------------------------


def test_an_lfs_file_resolves_to_storage_with_size_sha_and_commit(hub: FakeHub, storage) -> None:
    resolved = resolve("https://huggingface.co/acme/sd-models/blob/main/unet/model.safetensors")
    [url] = resolved.urls
    assert url.startswith(storage.base_url + "/file/")
    assert (resolved.filename, resolved.size, resolved.sha256) == ("model.safetensors", len(DATA), SHA)
    assert resolved.metadata == {
        "repo": "acme/sd-models",
        "repo_type": "model",
        "revision": "main",
        "commit": "a" * 40,
        "path": "unet/model.safetensors",
        "file_name": "model.safetensors",
        "size": len(DATA),
        "sha256": SHA,
        "host": "127.0.0.5",
    }
    assert [r.method for r in hub.requests] == ["HEAD"]
    assert storage.requests == []


def test_the_token_goes_to_the_hub_only(hub: FakeHub, storage) -> None:
    hub.repos[("model", "acme/sd-models")].private = True
    resolved = resolve("hf://acme/sd-models/unet/model.safetensors", TOKEN)
    assert hub.requests[-1].header("Authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in resolved.urls[0]
    assert storage.requests == []


def test_the_token_can_come_from_hf_token(hub: FakeHub, monkeypatch) -> None:
    hub.repos[("model", "acme/sd-models")].private = True
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert resolve("acme/sd-models/unet/model.safetensors").sha256 == SHA


def test_a_small_file_is_served_by_the_hub_itself(hub: FakeHub) -> None:
    resolved = resolve("https://huggingface.co/acme/sd-models/resolve/main/config.json")
    assert resolved.urls == [hub.base_url + "/acme/sd-models/resolve/main/config.json"]
    assert resolved.size == 8
    assert resolved.sha256 is None  # its ETag is a git sha1, not a sha256


def test_a_private_small_file_cannot_be_handed_over(hub: FakeHub) -> None:
    hub.repos[("model", "acme/sd-models")].private = True
    assert code_of(resolve, "acme/sd-models/config.json", TOKEN) == "hf_private_file"


def test_a_renamed_repository_is_followed_with_the_token(hub: FakeHub) -> None:
    hub.renamed[("model", "acme/old-name")] = "acme/sd-models"
    hub.repos[("model", "acme/sd-models")].private = True
    resolved = resolve("https://huggingface.co/acme/old-name/resolve/main/unet/model.safetensors", TOKEN)
    assert resolved.sha256 == SHA
    assert [r.path.split("/resolve")[0] for r in hub.requests] == ["/acme/old-name", "/acme/sd-models"]
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in hub.requests)


def test_datasets_work_too(hub: FakeHub) -> None:
    hub.add_repo("acme/imgs", kind="dataset")
    hub.add_file("acme/imgs", "x/data.zip", DATA, kind="dataset")
    resolved = resolve("https://huggingface.co/datasets/acme/imgs/resolve/main/x/data.zip")
    assert resolved.metadata["repo_type"] == "dataset"
    assert resolved.sha256 == SHA


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "url", "token", "code"),
    [
        (lambda h: None, "acme/nothing/x.safetensors", None, "hf_not_found"),
        (lambda h: None, "acme/nothing/x.safetensors", TOKEN, "hf_not_found"),
        (
            lambda h: setattr(h.repos[(M, "acme/sd-models")], "private", True),
            "acme/sd-models/unet/model.safetensors",
            None,
            "hf_not_found",
        ),
        (
            lambda h: h.repos[(M, "acme/sd-models")].__dict__.update(private=True, granted=False),
            "acme/sd-models/unet/model.safetensors",
            TOKEN,
            "hf_not_found",
        ),
        (
            lambda h: setattr(h.repos[(M, "acme/sd-models")], "gated", True),
            "acme/sd-models/unet/model.safetensors",
            None,
            "hf_gated",
        ),
        (
            lambda h: h.repos[(M, "acme/sd-models")].__dict__.update(gated=True, granted=False),
            "acme/sd-models/unet/model.safetensors",
            TOKEN,
            "hf_gated",
        ),
        (lambda h: None, "acme/sd-models/unet/missing.safetensors", None, "hf_file_not_found"),
        (lambda h: None, "acme/sd-models@nope/unet/model.safetensors", None, "hf_revision_not_found"),
        (lambda h: None, "acme/sd-models/unet/model.safetensors", "hf_wrong", "hf_token_rejected"),
    ],
)
def test_hub_errors_in_words(hub: FakeHub, setup, url: str, token: str | None, code: str) -> None:
    setup(hub)
    with pytest.raises(OrchestratorError) as caught:
        resolve(url, token)
    assert caught.value.code == code
    if token:
        assert token not in caught.value.message


def test_gated_says_where_to_accept_the_terms(hub: FakeHub) -> None:
    hub.repos[(M, "acme/sd-models")].gated = True
    with pytest.raises(OrchestratorError) as caught:
        resolve("acme/sd-models/unet/model.safetensors")
    assert "https://huggingface.co/acme/sd-models" in caught.value.message
    assert "accept" in caught.value.message


def test_a_configured_endpoint_is_the_hub_only_on_its_own_port(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert sources.identify("https://hf-mirror.example/acme/x/resolve/main/a.safetensors") == "huggingface"
    assert (
        sources.identify("https://hf-mirror.example:443/acme/x/resolve/main/a.safetensors") == "huggingface"
    )
    assert sources.identify("https://hf-mirror.example:8443/files/a.safetensors") == "direct"
    assert sources.identify("https://huggingface.co/acme/x/resolve/main/a.safetensors") == "huggingface"


def test_a_hub_that_fails(hub: FakeHub, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.4:9")
    assert code_of(resolve, "acme/sd-models/unet/model.safetensors") == "unreachable"


@pytest.mark.parametrize(
    ("status", "code"), [(500, "origin_error"), (503, "origin_error"), (429, "origin_rate_limited")]
)
def test_hub_failures(hub: FakeHub, status: int, code: str) -> None:
    hub.failing = status
    assert code_of(resolve, "acme/sd-models/unet/model.safetensors") == code


class MagnetHub(Service):
    """A Hub whose storage redirect names another scheme than http(s)."""

    def respond(self, request: Request) -> Reply:
        return Reply.redirect("magnet:?xt=urn:btih:0123456789abcdef&dn=model", 302)


def test_a_storage_redirect_to_another_scheme_is_refused(monkeypatch) -> None:
    with MagnetHub("127.0.0.4") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
        with pytest.raises(OrchestratorError) as caught:
            sources.resolve("hf://acme/model/model.safetensors", Credentials(), OPEN)
    assert caught.value.code == "unsupported_scheme"
    assert "magnet" in caught.value.message
