"""issue 10: tiny_model() caches its builds by their arguments (nothing new in /tmp per call), and a damaged cached
build is rebuilt with a warning (the demo prints it as a note)."""

from __future__ import annotations

import filecmp
import json
import os
import tempfile

import pytest

import hf_mistral_kit as kit
from hf_mistral_kit.cli.demo import tiny_checkpoint
from hf_mistral_kit.tiny import STAMP_FILE


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MISTRAL_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_builds_without_a_path_are_cached_by_their_arguments(cache):
    before = set(os.listdir(tempfile.gettempdir()))
    path = kit.tiny_model("mistral", sliding_window=8)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert path.parent == cache / "tiny" and path.name.startswith("mistral-")
    assert kit.tiny_model("mistral", sliding_window=8) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    other = kit.tiny_model("mistral", sliding_window=16)
    assert other != path and kit.AutoConfig.from_pretrained(other).sliding_window == 16
    native = kit.tiny_model("mistral", native=True, sliding_window=8)
    assert native not in (path, other) and (native / "params.json").is_file()
    assert set(os.listdir(tempfile.gettempdir())) == before  # nothing left in /tmp
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == sorted(p.name for p in (path, other, native))


@pytest.mark.parametrize("damage", ["truncate", "delete", "add", "header", "old-stamp"])
def test_a_damaged_build_is_rebuilt_with_a_warning(cache, tmp_path, damage):
    path = kit.tiny_model("mixtral", native=True)
    weights = path / "consolidated.safetensors"
    intact = tmp_path / "intact.safetensors"
    intact.write_bytes(weights.read_bytes())
    if damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "delete":
        (path / "tokenizer.model.v1").unlink()
    elif damage == "add":  # a caller saved something into the shared build
        (path / "notes.txt").write_text("{}")
    elif damage == "header":  # same size, header no longer JSON
        with open(weights, "r+b") as stream:
            stream.seek(8)
            stream.write(b"\xff\xfe")
    else:  # a stamp written by a kit that recorded no files
        stamp = json.loads((path / STAMP_FILE).read_text())
        del stamp["files"]
        (path / STAMP_FILE).write_text(json.dumps(stamp))
    with pytest.warns(UserWarning, match="cached tiny mixtral in .* was incomplete or damaged"):
        assert kit.tiny_model("mixtral", native=True) == path
    assert filecmp.cmp(weights, intact, shallow=False) and (path / "tokenizer.model.v1").is_file()
    assert not (path / "notes.txt").exists() and (path / "tokenizer.json").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folder left


def test_the_demo_heals_its_cache_with_a_note(tmp_path, capsys):
    path = tiny_checkpoint("mistral", root=tmp_path)
    os.truncate(path / "model.safetensors", 1000)
    capsys.readouterr()
    assert tiny_checkpoint("mistral", root=tmp_path) == path
    last = capsys.readouterr().err.splitlines()[-1]  # after transformers' progress bars
    assert last.startswith("note: the cached tiny mistral in") and last.endswith("rebuilt it.")
    assert kit.AutoModelForCausalLM.from_pretrained(path).config.vocab_size == 32768
