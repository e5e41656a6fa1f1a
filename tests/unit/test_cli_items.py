"""Batch files and command-line links: parsed and checked before anything downloads."""

from __future__ import annotations

import pytest

from orchestrator.cli.items import BadLine, Item, Outcome, check_item, parse_batch, read_batch
from orchestrator.sources import Credentials


def parse(text: str, default_type: str | None = None):
    return parse_batch(text, "models.txt", default_type)


def test_lines_comments_blank_lines_and_quoted_names():
    items, bad = parse(
        "# my list\n"
        "\n"
        "https://cdn.example/a.safetensors lora\n"
        '   https://cdn.example/b.pt Embedding "my name.pt"   # trailing comment\n'
        "https://cdn.example/c.bin#frag vae\n"
    )
    assert bad == []
    assert [(i.where, i.url, i.model_type, i.name) for i in items] == [
        ("models.txt:3", "https://cdn.example/a.safetensors", "lora", None),
        ("models.txt:4", "https://cdn.example/b.pt", "embedding", "my name.pt"),
        ("models.txt:5", "https://cdn.example/c.bin#frag", "vae", None),  # a #fragment is no comment
    ]


def test_bad_lines_are_reported_by_number_and_the_rest_kept():
    items, bad = parse(
        "https://cdn.example/a.safetensors sdxl\n"
        "ftp://cdn.example/b.bin lora\n"
        "https://cdn.example/c.bin\n"
        "https://cdn.example/d.bin lora name.bin extra\n"
        "https://cdn.example/e.bin lora 'unbalanced\n"
        "https://cdn.example/f.bin lora ..\n"
        "https://cdn.example/ok.bin lora\n"
    )
    assert [i.where for i in items] == ["models.txt:7"]
    messages = {o.where: o.error for o in bad}
    assert messages["models.txt:1"].startswith("unknown type 'sdxl' (known: checkpoint, lora")
    assert messages["models.txt:2"].startswith("Only http and https links")
    assert messages["models.txt:3"].startswith("no model type")
    assert messages["models.txt:4"].startswith("too many words (4)")
    assert messages["models.txt:5"].startswith("cannot read the line")
    assert "not a usable file name" in messages["models.txt:6"]
    assert all(o.state == "invalid" and not o.ok for o in bad)


def test_a_name_with_folders_files_it_in_a_subfolder_checked_like_the_api():
    items, bad = parse(
        "https://cdn.example/a.bin lora SDXL/styles/ink.safetensors\n"
        "https://cdn.example/b.bin lora ../../etc/x.safetensors\n"
        "https://cdn.example/c.bin lora " + "/".join(["d"] * 50) + "/c.safetensors\n"
    )
    assert [(i.subfolder, i.name) for i in items] == [("SDXL/styles", "ink.safetensors")]
    assert items[0].request(Credentials(), False)["subfolder"] == "SDXL/styles"
    messages = {o.where: o.error for o in bad}
    assert "not a usable subfolder: '.' and '..' are not folder names" in messages["models.txt:2"]
    assert "not a usable subfolder: it is more than 4 folders deep" in messages["models.txt:3"]


def test_default_type_fills_lines_without_one():
    items, bad = parse("https://cdn.example/a.bin\nhttps://cdn.example/b.bin vae\n", default_type="lora")
    assert bad == [] and [i.model_type for i in items] == ["lora", "vae"]


def test_unreadable_batch_file_is_one_clear_problem(tmp_path):
    with pytest.raises(BadLine, match="cannot read the batch file"):
        read_batch(str(tmp_path / "missing.txt"), None)
    listed = tmp_path / "list.txt"
    listed.write_text("https://cdn.example/a.bin lora\n", encoding="utf-8-sig")  # a Windows BOM
    items, bad = read_batch(str(listed), None, first_order=1000)
    assert bad == [] and items[0].url == "https://cdn.example/a.bin" and items[0].order == 1001


def test_request_carries_tokens_only_when_set_and_repr_never_shows_them():
    item = check_item(0, "x", "https://cdn.example/a.bin", "LoRA", "a.bin")
    assert item.request(Credentials(), overwrite=False) == {
        "url": "https://cdn.example/a.bin",
        "type": "lora",
        "overwrite": False,
        "name": "a.bin",
    }
    credentials = Credentials(civitai="civ-secret", huggingface="hf-secret")
    body = item.request(credentials, overwrite=True)
    assert body["civitai_token"] == "civ-secret" and body["hf_token"] == "hf-secret"
    assert "secret" not in repr(credentials) and "secret" not in repr(item)


def test_outcome_from_a_job_object():
    item = Item(3, "models.txt:3", "https://cdn.example/a.bin", "vae")
    done = Outcome.from_job(
        item,
        {
            "state": "completed",
            "filename": "a.bin",
            "total": 10,
            "sha256": "ab" * 32,
            "path": "vae/a.bin",
            "error": None,
        },
    )
    assert done.ok and done.label == "a.bin" and done.size == 10
    failed = Outcome.from_job(item, {"state": "failed", "error": {"code": "x", "message": "It broke."}})
    assert not failed.ok and failed.error == "It broke." and failed.label == "a.bin"
    stopped = Outcome.from_job(item, {"state": "downloading"}, interrupted=True)
    assert stopped.state == "interrupted" and "resume" in stopped.error
