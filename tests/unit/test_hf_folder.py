"""Hugging Face folders: the links accepted, the listing pinned to a commit, its limits and refusals."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from orchestrator.bundles import hf_folder
from orchestrator.bundles.hf_folder import FolderLink, FolderListing, list_folder, parse_folder
from orchestrator.errors import OrchestratorError
from orchestrator.sources import huggingface
from orchestrator.sources.huggingface import Link
from tests.fakes.huggingface import TOKEN, FakeHub
from tests.fakes.service import Request, SignedStorage

M = "model"
HF = "https://huggingface.co"
REPO = "acme/sd-diffusers"
FIRST = "a" * 40


def blob(size: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# a diffusers folder, added out of order: the Hub promises no order either
LFS = {
    "unet/diffusion_pytorch_model-00002-of-00003.safetensors": blob(4096, 2),
    "unet/diffusion_pytorch_model-00001-of-00003.safetensors": blob(4096, 1),
    "unet/diffusion_pytorch_model-00003-of-00003.safetensors": blob(2048, 3),
    "text_encoder/model.safetensors": blob(3072, 4),
    "vae/diffusion_pytorch_model.safetensors": blob(1024, 5),
}
SMALL = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "unet/diffusion_pytorch_model.safetensors.index.json": b'{"weight_map": {}}',
    "unet/config.json": b'{"sample_size": 64}',
    "text_encoder/config.json": b'{"hidden_size": 768}',
    "vae/config.json": b'{"latent_channels": 4}',
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
}
ALL = {**LFS, **SMALL}


@pytest.fixture
def storage() -> Iterator[SignedStorage]:
    server = SignedStorage("127.0.0.5")
    with server:
        yield server


@pytest.fixture
def hub(storage: SignedStorage, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    server = FakeHub(storage, "127.0.0.4")
    with server:
        monkeypatch.setenv("HF_ENDPOINT", server.base_url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        server.add_repo(REPO)
        for path, data in LFS.items():
            server.add_file(REPO, path, data)
        for path, data in SMALL.items():
            server.add_file(REPO, path, data, lfs=False)
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as made:
        yield made


def listing(
    session: requests.Session, text: str, token: str | None = None, **patterns: list[str]
) -> FolderListing:
    link = parse_folder(text)
    assert link is not None
    return list_folder(link, session, token, **patterns)


def code_of(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    assert len(caught.value.message) > 30
    assert TOKEN not in caught.value.message
    return caught.value.code


def tree_calls(hub: FakeHub) -> list[Request]:
    return [r for r in hub.api_calls() if "/tree/" in r.path]


# -- links ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "link"),
    [
        (f"{HF}/acme/flux/tree/main/text_encoder", FolderLink(M, "acme/flux", "main", "text_encoder")),
        (f"{HF}/acme/flux/tree/main", FolderLink(M, "acme/flux", "main", "")),
        (f"{HF}/acme/flux/tree/main/", FolderLink(M, "acme/flux", "main", "")),
        (
            "https://hf.co/acme/flux/tree/v1.0/unet/sub/?x=1#top",
            FolderLink(M, "acme/flux", "v1.0", "unet/sub"),
        ),
        (f"{HF}/datasets/acme/imgs/tree/main/train", FolderLink("dataset", "acme/imgs", "main", "train")),
        (f"{HF}/spaces/acme/demo/tree/main/models", FolderLink("space", "acme/demo", "main", "models")),
        (f"{HF}/acme/flux/tree/refs%2Fpr%2F1/unet", FolderLink(M, "acme/flux", "refs/pr/1", "unet")),
        (f"{HF}/acme/flux/tree/refs/pr/1/unet", FolderLink(M, "acme/flux", "refs/pr/1", "unet")),
        (f"{HF}/acme/flux/tree/refs/convert/parquet", FolderLink(M, "acme/flux", "refs/convert/parquet", "")),
        (f"{HF}/acme/flux/tree/feature%2Ffoo/vae", FolderLink(M, "acme/flux", "feature/foo", "vae")),
        (f"{HF}/acme/flux/tree/main/my%20folder", FolderLink(M, "acme/flux", "main", "my folder")),
        (f"{HF}/gpt2/tree/main/onnx", FolderLink(M, "gpt2", "main", "onnx")),
        (f"{HF}/acme/flux", FolderLink(M, "acme/flux", "main", "")),
        (f"{HF}/datasets/acme/imgs", FolderLink("dataset", "acme/imgs", "main", "")),
        ("hf://acme/flux/unet/", FolderLink(M, "acme/flux", "main", "unet")),
        ("hf://acme/flux/unet", FolderLink(M, "acme/flux", "main", "unet")),
        ("hf://acme/flux/unet.fp16/", FolderLink(M, "acme/flux", "main", "unet.fp16")),
        ("hf://acme/flux@fp16/text_encoder/", FolderLink(M, "acme/flux", "fp16", "text_encoder")),
        ("hf://acme/flux@refs/pr/1/unet", FolderLink(M, "acme/flux", "refs/pr/1", "unet")),
        ("hf://acme/flux@refs/pr/1", FolderLink(M, "acme/flux", "refs/pr/1", "")),
        ("hf://acme/flux@feature%2Ffoo/vae/", FolderLink(M, "acme/flux", "feature/foo", "vae")),
        ("hf://acme/flux", FolderLink(M, "acme/flux", "main", "")),
        ("hf://acme/sd.v2@v2", FolderLink(M, "acme/sd.v2", "v2", "")),
        ("hf://datasets/acme/imgs/train/", FolderLink("dataset", "acme/imgs", "main", "train")),
        ("hf://spaces/acme/demo", FolderLink("space", "acme/demo", "main", "")),
    ],
)
def test_folder_links(text: str, link: FolderLink) -> None:
    assert parse_folder(text) == link


def test_a_link_on_the_configured_endpoint_is_a_hub_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert parse_folder("http://mirror.example:8080/acme/flux/tree/main/vae") == FolderLink(
        M, "acme/flux", "main", "vae"
    )


@pytest.mark.parametrize(
    "text",
    [
        f"{HF}/acme/flux/resolve/main/flux1-dev.safetensors",
        f"{HF}/acme/flux/blob/main/unet/config.json",
        f"{HF}/datasets/acme/imgs/raw/main/README.md",
        "hf://acme/flux/unet/model.safetensors",
        "hf://acme/flux@fp16/model_index.json",
    ],
)
def test_single_files_are_left_to_the_file_source(text: str) -> None:
    assert parse_folder(text) is None
    assert huggingface.parse(text).path.endswith((".safetensors", ".json", ".md"))


@pytest.mark.parametrize(
    "text",
    ["https://civitai.com/models/1", "https://example.com/acme/flux/tree/main", "acme/flux/x.safetensors"],
)
def test_other_links_are_not_folders(text: str) -> None:
    assert parse_folder(text) is None


@pytest.mark.parametrize(
    "text",
    [
        f"{HF}/",
        f"{HF}/acme",
        f"{HF}/datasets/acme",
        f"{HF}/settings/tokens",
        f"{HF}/acme/flux/discussions",
        f"{HF}/acme/flux/commit/0123abc",
        f"{HF}/acme/flux/tree",
        f"{HF}/acme/flux/tree/main/../../etc",
        f"{HF}/acme/flux/tree/main/a%5Cb",
        f"{HF}/acme/flux/tree/main/%2e%2e/x",
        "hf://acme",
        "hf://acme/flux@",
        "hf://acme/flux@main/a/../../b/",
        "hf://../flux/x/",
    ],
)
def test_hub_links_that_name_neither_are_refused(text: str) -> None:
    assert code_of(parse_folder, text) == "hf_bad_link"


# -- the listing ---------------------------------------------------------------------------------


def test_a_whole_diffusers_repo_over_several_pages(hub: FakeHub, session: requests.Session) -> None:
    hub.tree_page_size = 3
    result = listing(session, f"{HF}/{REPO}/tree/main")

    assert (result.repo, result.kind, result.revision, result.commit, result.folder) == (
        REPO, M, "main", FIRST, ""
    )  # fmt: skip
    assert [f.path for f in result.files] == sorted(ALL)
    for file in result.files:
        data = ALL[file.path]
        assert file.size == len(data)
        assert file.repo_path == file.path
        if file.path in LFS:
            assert file.sha256 == hashlib.sha256(data).hexdigest()
        else:
            assert (file.sha256, file.git_oid) == (None, git_sha1(data))
        assert file.url == f"{hub.base_url}/{REPO}/resolve/{FIRST}/{file.path}"
    assert result.total_size == sum(len(data) for data in ALL.values())
    # 11 files and 3 directories, 3 a page: the Link header was followed to the end
    assert len(tree_calls(hub)) == 5
    assert all(f"/tree/{FIRST}" in r.path for r in tree_calls(hub))  # listed at the commit, not at main


def test_every_url_brings_the_listed_bytes(hub: FakeHub, session: requests.Session) -> None:
    result = listing(session, f"hf://{REPO}/unet/")
    for file in result.files:
        body = session.get(file.url, timeout=10).content
        assert body == ALL[file.repo_path]
        if file.sha256:
            assert hashlib.sha256(body).hexdigest() == file.sha256


def test_a_folder_lists_its_files_relative_to_itself(hub: FakeHub, session: requests.Session) -> None:
    result = listing(session, f"{HF}/{REPO}/tree/main/unet")
    assert [f.path for f in result.files] == [
        "config.json",
        "diffusion_pytorch_model-00001-of-00003.safetensors",
        "diffusion_pytorch_model-00002-of-00003.safetensors",
        "diffusion_pytorch_model-00003-of-00003.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    ]
    assert {f.repo_path for f in result.files} == {p for p in ALL if p.startswith("unet/")}
    assert result.folder == "unet"
    [call] = tree_calls(hub)
    assert call.path == f"/api/models/{REPO}/tree/{FIRST}/unet"
    assert call.query == {"recursive": "true", "expand": "false"}
    [pin] = [r for r in hub.api_calls() if "/revision/" in r.path]
    assert pin.path == f"/api/models/{REPO}/revision/main"


def test_nested_folders_are_listed_recursively(hub: FakeHub, session: requests.Session) -> None:
    hub.add_file(REPO, "vae/extras/deep/notes.txt", b"notes", lfs=False)
    result = listing(session, f"hf://{REPO}/vae")
    assert [f.path for f in result.files] == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "extras/deep/notes.txt",
    ]
    assert parse_folder(f"hf://{REPO}/vae/extras/deep/") is not None
    assert [f.path for f in listing(session, f"hf://{REPO}/vae/extras/deep/").files] == ["notes.txt"]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["*.safetensors"], [], sorted(LFS)),  # `*` crosses folders, as in huggingface_hub
        (["text_encoder/"], [], ["text_encoder/config.json", "text_encoder/model.safetensors"]),
        (
            ["unet/*", "vae/*"],
            ["*.json"],
            [p for p in sorted(LFS) if p.startswith(("unet/", "vae/"))],
        ),
        (
            [],
            ["unet\\", ".*", "*.json"],
            ["text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"],
        ),
        (["*-0000[12]-of-*"], [], [p for p in sorted(LFS) if "-00003-" not in p and "-of-" in p]),
    ],
)
def test_include_and_exclude_patterns(
    hub: FakeHub, session: requests.Session, include: list[str], exclude: list[str], expected: list[str]
) -> None:
    result = listing(session, f"hf://{REPO}", include=include, exclude=exclude)
    assert [f.path for f in result.files] == expected
    assert result.total_size == sum(len(ALL[p]) for p in expected)


def test_patterns_apply_to_paths_inside_the_folder(hub: FakeHub, session: requests.Session) -> None:
    result = listing(session, f"{HF}/{REPO}/tree/main/unet", include=["diffusion_pytorch_model-*"])
    assert len(result.files) == 3
    assert code_of(listing, session, f"{HF}/{REPO}/tree/main/unet", include=["unet/*"]) == "hf_folder_empty"


def test_patterns_are_case_sensitive_and_matching_nothing_is_an_error(
    hub: FakeHub, session: requests.Session
) -> None:
    assert code_of(listing, session, f"hf://{REPO}", include=["*.SAFETENSORS"]) == "hf_folder_empty"
    assert code_of(listing, session, f"hf://{REPO}", exclude=["*"]) == "hf_folder_empty"


def test_an_empty_repository_is_an_error(hub: FakeHub, session: requests.Session) -> None:
    hub.add_repo("acme/empty")
    assert code_of(listing, session, "hf://acme/empty") == "hf_folder_empty"


def test_the_listing_stays_on_its_commit_when_main_moves(hub: FakeHub, session: requests.Session) -> None:
    shard = "unet/diffusion_pytorch_model-00001-of-00003.safetensors"
    before = listing(session, f"hf://{REPO}/unet/")
    second = hub.push(REPO, shard, blob(8192, 99))  # main moves on after the listing
    assert before.commit == FIRST
    old = next(f for f in before.files if f.repo_path == shard)
    assert f"/resolve/{FIRST}/" in old.url
    assert session.get(old.url, timeout=10).content == LFS[shard]  # the old bytes, still

    after = listing(session, f"hf://{REPO}/unet/")
    new = next(f for f in after.files if f.repo_path == shard)
    assert (after.commit, new.size, new.sha256) == (second, 8192, hashlib.sha256(blob(8192, 99)).hexdigest())
    # asking for the first commit by name lists it as it was
    again = listing(session, f"hf://{REPO}@{FIRST}/unet/")
    assert again.files == before.files


def test_a_pull_request_revision_is_pinned_through_the_encoded_ref(
    hub: FakeHub, session: requests.Session
) -> None:
    pr_commit = "b" * 40
    hub.repos[(M, REPO)].revisions["refs/pr/1"] = pr_commit
    result = listing(session, f"{HF}/{REPO}/tree/refs/pr/1/vae")
    assert (result.revision, result.commit) == ("refs/pr/1", pr_commit)
    assert any(r.path == f"/api/models/{REPO}/revision/refs%2Fpr%2F1" for r in hub.api_calls())
    assert all(f"/resolve/{pr_commit}/" in f.url for f in result.files)
    assert huggingface.parse(result.files[0].url) == Link(M, REPO, pr_commit, "vae/config.json")


def test_a_dataset_folder(hub: FakeHub, session: requests.Session) -> None:
    hub.add_repo("acme/imgs", kind="dataset")
    hub.add_file("acme/imgs", "train/a b.zip", blob(2048, 7), kind="dataset")
    result = listing(session, f"{HF}/datasets/acme/imgs/tree/main/train")
    [file] = result.files
    assert (result.kind, file.path) == ("dataset", "a b.zip")
    assert file.url == f"{hub.base_url}/datasets/acme/imgs/resolve/{FIRST}/train/a%20b.zip"
    assert session.get(file.url, timeout=10).content == blob(2048, 7)


def test_a_renamed_repository_is_followed_on_the_hub(hub: FakeHub, session: requests.Session) -> None:
    hub.renamed[(M, "acme/old-name")] = REPO
    result = listing(session, "hf://acme/old-name/vae/")
    assert len(result.files) == 2
    assert [r.path.split("/tree")[0] for r in hub.api_calls() if "/tree" in r.path] == [
        "/api/models/acme/old-name",
        f"/api/models/{REPO}",
    ]


# -- the token -----------------------------------------------------------------------------------


def test_a_private_repo_with_the_token_sent_to_the_hub_only(
    hub: FakeHub, storage: SignedStorage, session: requests.Session
) -> None:
    hub.repos[(M, REPO)].private = True
    hub.tree_page_size = 4
    result = listing(session, f"hf://{REPO}", TOKEN)
    assert len(result.files) == len(ALL)
    assert len(tree_calls(hub)) > 1
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in hub.api_calls())
    assert not any(TOKEN in f.url for f in result.files)
    assert storage.requests == []
    assert code_of(listing, session, f"hf://{REPO}") == "hf_not_found"  # and it is needed


def test_a_next_page_on_another_host_is_refused_unvisited(
    hub: FakeHub, storage: SignedStorage, session: requests.Session
) -> None:
    hub.repos[(M, REPO)].private = True
    hub.tree_page_size = 2
    hub.next_page_base = storage.base_url
    assert code_of(listing, session, f"hf://{REPO}", TOKEN) == "hf_bad_listing"
    assert storage.requests == []
    assert not storage.saw_text(TOKEN)


def test_a_gated_repo_lists_once_its_terms_are_accepted(hub: FakeHub, session: requests.Session) -> None:
    hub.repos[(M, REPO)].gated = True
    assert len(listing(session, f"hf://{REPO}/vae", TOKEN).files) == 2


# -- refusals ------------------------------------------------------------------------------------


def _private(hub: FakeHub) -> None:
    hub.repos[(M, REPO)].__dict__.update(private=True, granted=False)


def _gated(hub: FakeHub) -> None:
    hub.repos[(M, REPO)].__dict__.update(gated=True, granted=False)


@pytest.mark.parametrize(
    ("setup", "text", "token", "code"),
    [
        (None, "hf://acme/nothing/unet/", None, "hf_not_found"),
        (None, "hf://acme/nothing/unet/", TOKEN, "hf_not_found"),
        (_private, f"hf://{REPO}/unet/", None, "hf_not_found"),
        (_private, f"hf://{REPO}/unet/", TOKEN, "hf_not_found"),
        (_gated, f"hf://{REPO}/unet/", None, "hf_gated"),
        (_gated, f"hf://{REPO}/unet/", TOKEN, "hf_gated"),
        (None, f"hf://{REPO}@v9/unet/", None, "hf_revision_not_found"),
        (None, f"{HF}/{REPO}/tree/main/tokenizer", None, "hf_file_not_found"),
        (None, f"{HF}/{REPO}/tree/main/model_index.json", None, "hf_file_not_found"),  # a file, not a folder
        (None, f"hf://{REPO}/unet/", "hf_notAValidToken", "hf_token_rejected"),
        (lambda h: setattr(h, "failing", 503), f"hf://{REPO}/unet/", None, "origin_error"),
    ],
)
def test_hub_refusals_have_the_same_codes_as_single_files(
    hub: FakeHub,
    session: requests.Session,
    setup: Callable[[FakeHub], None] | None,
    text: str,
    token: str | None,
    code: str,
) -> None:
    if setup:
        setup(hub)
    assert code_of(listing, session, text, token) == code


def test_a_gated_refusal_says_where_to_accept_the_terms(hub: FakeHub, session: requests.Session) -> None:
    _gated(hub)
    with pytest.raises(OrchestratorError) as caught:
        listing(session, f"hf://{REPO}/unet/")
    assert f"https://huggingface.co/{REPO}" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Hugging Face is down</body></html>",
        b'{"error": "Internal Error"}',
        b'[{"type": "file", "size": 3}]',
        b'[{"type": "file", "path": "unet/x.bin", "size": "big"}]',
        b'[{"type": "file", "path": "unet/x.bin", "size": 3, "lfs": {"oid": "not-a-sha", "size": 3}}]',
        b'["unet/x.bin"]',
    ],
)
def test_a_tree_answer_that_is_not_the_json_list_it_should_be(
    hub: FakeHub, session: requests.Session, body: bytes
) -> None:
    hub.tree_body = body
    assert code_of(listing, session, f"hf://{REPO}/unet/") == "origin_error"


def test_a_file_asked_for_as_a_folder(hub: FakeHub, session: requests.Session) -> None:
    # the fake answers EntryNotFound, as for any path that is no folder; a Hub that lists the file
    # itself instead gets a sentence that says so
    assert code_of(listing, session, f"hf://{REPO}/unet/config") == "hf_file_not_found"
    hub.tree_body = b'[{"type": "file", "path": "unet/config", "size": 3, "oid": "0"}]'
    hub.add_file(REPO, "unet/config/x.json", b"{}", lfs=False)  # so that the folder exists for the fake
    assert code_of(listing, session, f"hf://{REPO}/unet/config") == "hf_not_a_folder"


@pytest.mark.parametrize(
    "path",
    [
        "unet/../../evil.safetensors",
        "/etc/cron.d/evil",
        "unet\\..\\..\\evil.bin",
        "unet/evil\x00.safetensors",
        "unet//evil.bin",
        "unet/./evil.bin",
        "unet/evil\n.bin",
    ],
)
def test_a_path_that_would_escape_refuses_the_whole_listing(
    hub: FakeHub, session: requests.Session, path: str
) -> None:
    hub.add_file(REPO, path, b"evil", lfs=False)
    # the whole repository, and even with the path left out by a pattern: the Hub is not to be trusted
    assert code_of(listing, session, f"hf://{REPO}") == "hf_bad_listing"
    assert code_of(listing, session, f"hf://{REPO}", include=["vae/*"]) == "hf_bad_listing"


def test_more_files_than_the_limit_stops_paging_and_says_how_to_narrow(
    hub: FakeHub, session: requests.Session
) -> None:
    hub.add_repo("acme/huge", kind="dataset")
    for n in range(12_000):
        hub.add_file("acme/huge", f"shards/{n:05d}.txt", b"x", lfs=False, kind="dataset")
    with pytest.raises(OrchestratorError) as caught:
        listing(session, "hf://datasets/acme/huge/shards/")
    error = caught.value
    assert error.code == "hf_too_many_files"
    # pages of 1,000 entries: the limit is passed on the 11th
    assert "11,000" in error.message and "include" in error.message
    assert len(tree_calls(hub)) == 11  # of 13: it stopped once past the limit

    narrowed = listing(session, "hf://datasets/acme/huge/shards/", include=["0000*"])
    assert [f.path for f in narrowed.files] == [f"{n:05d}.txt" for n in range(10)]


def test_the_number_of_pages_is_bounded(hub: FakeHub, session: requests.Session) -> None:
    hub.tree_page_size = 1
    for n in range(hf_folder.MAX_PAGES + 5):
        hub.add_file(REPO, f"extra/{n}.txt", b"x", lfs=False)
    assert code_of(listing, session, f"hf://{REPO}/extra/") == "hf_too_many_pages"
    assert len(tree_calls(hub)) == hf_folder.MAX_PAGES


# -- shards --------------------------------------------------------------------------------------


def test_shard_sets_are_grouped_with_their_index(hub: FakeHub, session: requests.Session) -> None:
    result = listing(session, f"hf://{REPO}")
    [shards] = hf_folder.shard_sets(result.files)
    assert shards.name == "unet/diffusion_pytorch_model.safetensors"
    assert (shards.total, shards.numbers, shards.missing) == (3, (1, 2, 3), ())
    assert shards.index == "unet/diffusion_pytorch_model.safetensors.index.json"
    hf_folder.require_complete_shards(result.files)  # complete: no error


def test_a_set_with_a_shard_left_out_is_reported(hub: FakeHub, session: requests.Session) -> None:
    result = listing(session, f"hf://{REPO}", exclude=["*-00002-of-00003.safetensors"])
    [shards] = hf_folder.shard_sets(result.files)
    assert shards.missing == (2,)
    with pytest.raises(OrchestratorError) as caught:
        hf_folder.require_complete_shards(result.files)
    assert caught.value.code == "hf_shards_missing"
    assert "unet/diffusion_pytorch_model-00002-of-00003.safetensors" in caught.value.message


def test_shard_names_are_taken_literally() -> None:
    files = [
        hf_folder.FolderFile(
            f"{{odd}}/m-{n:03d}-of-004.bin", f"{{odd}}/m-{n:03d}-of-004.bin", 1, None, None, ""
        )
        for n in (1, 3)
    ]
    [shards] = hf_folder.shard_sets(files)
    assert [shards.shard_path(n) for n in shards.missing] == [
        "{odd}/m-002-of-004.bin",
        "{odd}/m-004-of-004.bin",
    ]


def test_shards_of_a_folder_listing_and_gguf_splits(hub: FakeHub, session: requests.Session) -> None:
    hub.add_file(REPO, "gguf/flux-Q4-00001-of-00002.gguf", blob(1024, 8))
    gguf = listing(session, f"hf://{REPO}/gguf/")
    [shards] = hf_folder.shard_sets(gguf.files)
    assert (shards.name, shards.missing, shards.index) == ("flux-Q4.gguf", (2,), None)
    assert code_of(hf_folder.require_complete_shards, gguf.files) == "hf_shards_missing"
