"""The published SHA-256's check begun while aria2 downloads (pipeline/early_hash.py): only ever
a shortcut to the same digest, thrown away whenever it could be wrong."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from orchestrator.engines.aria2 import _complete_prefix
from orchestrator.pipeline.early_hash import STEP, RunningHash

MiB = 1024 * 1024


def test_what_is_hashed_in_steps_during_the_download_and_the_tail_after_is_the_files_digest(tmp_path: Path):
    data = os.urandom(3 * MiB + 123)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    running = RunningHash("gid-1.session", path)
    running.advance(MiB)
    running.advance(2 * MiB + 7)
    assert running.offset == 2 * MiB + 7
    assert running.finish("gid-1.session") == hashlib.sha256(data).hexdigest()


def test_another_transfer_of_the_same_file_is_not_trusted(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(MiB))
    running = RunningHash("gid-1.session", path)
    running.advance(MiB // 2)
    assert running.finish("gid-2.session") is None  # re-added: the file was written anew


def test_a_file_replaced_under_it_spoils_it(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(MiB))
    running = RunningHash("gid-1.session", path)
    running.advance(MiB // 2)
    keep = tmp_path / "keep"  # hold the old inode so the new file cannot reuse it
    os.link(path, keep)
    path.unlink()
    path.write_bytes(os.urandom(MiB))
    assert running.finish("gid-1.session") is None


def test_a_vanished_file_spoils_it_without_an_error(tmp_path: Path):
    running = RunningHash("gid-1.session", tmp_path / "gone.safetensors")
    running.advance(MiB)
    assert running.spoiled and running.finish("gid-1.session") is None


def test_it_asks_for_a_read_only_for_its_own_transfer_and_a_step_at_a_time(tmp_path: Path):
    running = RunningHash("gid-1.session", tmp_path / "x")
    assert not running.wants("gid-1.session", STEP - 1)
    assert running.wants("gid-1.session", STEP)
    assert not running.wants("gid-2.session", 10 * STEP)
    running.busy = True
    assert not running.wants("gid-1.session", 10 * STEP)


def test_the_complete_prefix_is_read_from_aria2s_bitfield():
    assert _complete_prefix("e0", str(MiB), 8 * MiB) == 3 * MiB  # 1110 0000
    assert _complete_prefix("7f", str(MiB), 8 * MiB) == 0  # the first piece is missing
    assert _complete_prefix("ff", str(MiB), 5 * MiB + 1) == 5 * MiB + 1  # the last piece is short
    assert _complete_prefix("fff0", str(MiB), 16 * MiB) == 12 * MiB
    assert _complete_prefix("", str(MiB), MiB) is None
    assert _complete_prefix("zz", str(MiB), MiB) is None
    assert _complete_prefix("ff", str(MiB), None) is None
