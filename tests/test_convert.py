"""issue 10: convert leaves no staging folder behind (SIGTERM, or a killed earlier run) and never copies a file from
outside SRC into DST through a symbolic link."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import warnings

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.convert import STAGING_MARKER
from hf_mistral_kit.formats.errors import NativeCheckpointError


@pytest.fixture(scope="module")
def hf_source():
    return kit.tiny_model("mistral")


def checkpoint_copy(source, target):
    shutil.copytree(source, target)
    return target


def leftovers(parent):
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


SIGTERM_MIDWAY = """
import os, signal, sys, time
from hf_mistral_kit.formats import native
from hf_mistral_kit.cli import main

original = native.write_safetensors

def write_then_get_killed(path, tensors):
    original(path, tensors)  # the staging folder now holds a whole weights file
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler raises in here
    print("not terminated", flush=True)

native.write_safetensors = write_then_get_killed
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_midway_removes_the_staging_folder_and_still_terminates(hf_source, tmp_path):
    dst = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_MIDWAY, "convert", str(hf_source), str(dst), "--to", "native"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr  # the status a SIGTERM gives, after cleaning up
    assert "not terminated" not in result.stdout and "Traceback" not in result.stderr
    assert not dst.exists() and leftovers(tmp_path) == []


def test_staging_folders_of_killed_runs_are_removed_on_the_next_run(hf_source, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}-x1"  # what a SIGKILLed run leaves: half a checkpoint
    live = tmp_path / f".other.partial-{os.getpid()}-x2"  # a conversion still running (this process)
    foreign = tmp_path / ".out.partial-unmarked"  # not the kit's: left alone
    for folder, owner in ((stale, dead.pid), (live, os.getpid()), (foreign, None)):
        folder.mkdir()
        (folder / "consolidated.safetensors").write_bytes(b"\0" * 1024)
        if owner is not None:
            (folder / STAGING_MARKER).write_text(f'{{"pid": {owner}, "host": "{socket.gethostname()}"}}')
    with pytest.warns(UserWarning, match=r"removed .*\.out\.partial-.*left behind by an interrupted conversion"):
        kit.convert_checkpoint(hf_source, tmp_path / "out", to="native")
    assert (tmp_path / "out" / "params.json").is_file() and not (tmp_path / "out" / STAGING_MARKER).exists()
    assert leftovers(tmp_path) == sorted([live.name, foreign.name])


def test_symlinks_leaving_src_are_refused_and_nothing_is_written(hf_source, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any checkpoint")
    src = checkpoint_copy(hf_source, tmp_path / "src")
    (src / "tokenizer.model.v9").symlink_to(secret)
    with pytest.raises(NativeCheckpointError, match=r"tokenizer.model.v9 is a symbolic link to .*secret.txt, outside"):
        kit.convert_checkpoint(src, tmp_path / "dst", to="native")
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == []

    # A link to a file inside SRC is the file's content; a FIFO with a tokenizer's name is refused.
    (src / "tokenizer.model.v9").unlink()
    (src / "tokenizer.model.v9").symlink_to(src / "tokenizer.model.v1")
    out = kit.convert_checkpoint(src, tmp_path / "dst", to="native")
    assert not (out / "tokenizer.model.v9").is_symlink()
    assert (out / "tokenizer.model.v9").read_bytes() == (src / "tokenizer.model.v1").read_bytes()
    (src / "tokenizer.model.v9").unlink()
    os.mkfifo(src / "tokenizer.model.v9")
    with pytest.raises(NativeCheckpointError, match="tokenizer.model.v9 is not a regular file"):
        kit.convert_checkpoint(src, tmp_path / "dst2", to="native")


def test_a_hugging_face_cache_snapshot_converts(hf_source, tmp_path):
    """Every file of a Hub snapshot is a link into the repository's blobs/: those are the checkpoint's own files."""
    repo = tmp_path / "models--mistralai--tiny"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for file in hf_source.iterdir():
        shutil.copyfile(file, blobs / file.name)
        (snapshot / file.name).symlink_to(os.path.relpath(blobs / file.name, snapshot))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = kit.convert_checkpoint(snapshot, tmp_path / "native", to="native")
    assert (out / "tokenizer.model.v1").read_bytes() == (hf_source / "tokenizer.model.v1").read_bytes()
