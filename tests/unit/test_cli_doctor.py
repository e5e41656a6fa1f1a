"""doctor's checks: each finding says what to fix, and a token is never shown whole."""

from __future__ import annotations

from orchestrator.cli.doctor import check_folder, check_tokens, mask


def test_tokens_are_masked():
    assert mask("abcdefghijklmnopqrstuvwxyz") == "abcd…wxyz"
    assert mask("short-token") == "11 characters"  # too short to show any of it


def test_token_checks_never_hold_the_token(monkeypatch):
    monkeypatch.setenv("CIVITAI_TOKEN", "civitai-0123456789abcdef")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    civitai, hf = check_tokens()
    assert civitai.level == "ok" and "civi…cdef" in civitai.detail
    assert "0123456789" not in civitai.detail + str(civitai.fix)
    assert hf.level == "info" and "not set" in hf.detail and hf.fix


def test_folders(tmp_path):
    good = check_folder("models folder", tmp_path, space=True)
    assert good.level in ("ok", "warn") and "writable" in good.detail and "GiB free" in good.detail
    later = check_folder("state folder", tmp_path / "a" / "b", space=False)
    assert later.level == "ok" and "will be created" in later.detail
    assert not (tmp_path / "a").exists()  # doctor only looks
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = check_folder("models folder", blocker / "models", space=True)
    assert bad.level == "FAIL" and "is not a folder" in bad.detail and "--models-dir" in bad.fix
    assert list(tmp_path.iterdir()) == [blocker]  # the probe file is gone
