"""issue 10: convert leaves no staging folder behind (SIGTERM, or a killed earlier run) and never copies a file from
outside SRC into DST through a symbolic link. issue 19: whatever the moment a GGUF conversion is killed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import hf_mistral_kit as kit
from hf_mistral_kit.convert import STAGING_MARKER
from hf_mistral_kit.formats.errors import GGUFError, NativeCheckpointError


@pytest.fixture(scope="module")
def hf_source():
    return kit.tiny_model("mistral", tokenizer="v1")


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
    # issue 20: not without a word.
    assert result.stderr.splitlines()[-1] == (
        f"hf-mistral-kit convert: terminated by SIGTERM: {dst} was not written (its unfinished files are removed)."
    )


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


# issue 19: `convert --to gguf` stopped at a given moment of the conversion, which then waits for a line on stdin (the
# test signals it first): right after its staging folder is created (before the folder's marker is written), and
# once the finished DST.gguf is in place (before the staging folder is removed).
KILLED_AT = """
import pathlib, sys, tempfile
from hf_mistral_kit.cli import main

moment = sys.argv.pop(1)

def pause_after(owner, name, when):
    original = getattr(owner, name)

    def paused(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            print(moment, flush=True)
            sys.stdin.readline()
        return result

    setattr(owner, name, paused)

if moment == "created":
    pause_after(tempfile, "mkdtemp", lambda **kwargs: ".partial-" in kwargs.get("prefix", ""))
else:
    pause_after(pathlib.Path, "replace", lambda path, target: str(target).endswith(".gguf"))
sys.exit(main(sys.argv[1:]))
"""


def finish_killed_run(process, signum, parent, src, stdin=None, may_finish=False):
    """Wait for a convert process that got `signum` (giving it `stdin`); after a SIGKILL that left something, run the
    next conversion into the same folder (which must remove it). Returns what `parent` held once the process was
    gone, and what it holds in the end (the next run's own output removed)."""
    _, err = process.communicate(stdin, timeout=120)
    finished = may_finish and process.returncode == 0 and (parent / "x.gguf").is_file()  # done before the signal
    assert finished or process.returncode == -signum, err  # the status the signal gives, after cleaning up
    assert "Traceback" not in err
    killed = sorted(path.name for path in parent.iterdir())
    if signum == signal.SIGKILL and leftovers(parent):
        with pytest.warns(UserWarning, match=r"removed .*\.x\.gguf\.partial-.*left behind by an interrupted"):
            kit.convert_checkpoint(src, parent / "y.gguf", to="gguf")
        (parent / "y.gguf").unlink()
    return killed, sorted(path.name for path in parent.iterdir())


@pytest.mark.parametrize(
    ("moment", "signum"),
    [("created", signal.SIGTERM), ("created", signal.SIGKILL), ("published", signal.SIGKILL)],
    ids=["created-SIGTERM", "created-SIGKILL", "published-SIGKILL"],
)
def test_convert_to_gguf_killed_at_its_delicate_moments_leaves_no_temporary(hf_source, tmp_path, moment, signum):
    """The moments a staging folder was left: a SIGTERM before the clean-up was armed; a SIGKILL before the marker
    was written or after it was removed (the next run took such a folder for someone else's)."""
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_AT, moment, "convert", str(hf_source), str(out / "x.gguf"), "--to", "gguf"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == f"{moment}\n", process.communicate(timeout=120)[1]
    process.send_signal(signum)
    killed, left = finish_killed_run(process, signum, out, hf_source, stdin="\n")  # the line ends the pause
    if signum == signal.SIGKILL:
        assert leftovers(out) == [] and killed != left  # killed outright, it left its staging folder: now removed
    assert left == (["x.gguf"] if moment == "published" else [])


@pytest.fixture(scope="module")
def larger_source():
    """Big enough that writing its Q8_0 GGUF takes a noticeable moment (a third of a second here)."""
    return kit.tiny_model("mistral", hidden_size=256, intermediate_size=1024, num_hidden_layers=4, head_dim=64)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("moment", ["staging folder", "GGUF file"])
def test_the_console_script_killed_while_writing_a_gguf_leaves_no_temporary(larger_source, tmp_path, moment, signum):
    """The real command, signalled as soon as its staging folder (or the GGUF file in it) appears: afterwards (after
    the next run, for a SIGKILL) the folder holds no temporary, only DST.gguf if the signal came after it was done."""
    out = tmp_path / "out"
    out.mkdir()
    command = Path(sys.executable).with_name("hf-mistral-kit")
    process = subprocess.Popen(
        [command, "convert", str(larger_source), str(out / "x.gguf"), "--to", "gguf", "--dtype", "q8_0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pattern = ".x.gguf.partial-*" if moment == "staging folder" else ".x.gguf.partial-*/x.gguf"
    deadline = time.monotonic() + 120
    while not list(out.glob(pattern)):
        assert process.poll() is None, f"convert ended before its {moment} appeared: {process.communicate()[1]}"
        assert time.monotonic() < deadline, f"no {moment} after 120 s"
        time.sleep(0.001)
    process.send_signal(signum)
    _, left = finish_killed_run(process, signum, out, larger_source, may_finish=True)
    assert left in ([], ["x.gguf"])


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


UMASK_OUTPUTS = """
import sys
from pathlib import Path
import hf_mistral_kit as kit
from hf_mistral_kit.tiny import teach

root = Path(sys.argv[1])
tiny = kit.tiny_model("mistral", path=root / "tiny")
greeting = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
teach(kit.tiny_model("mistral", path=root / "taught"), [greeting])
kit.convert_checkpoint(tiny, root / "x.gguf", to="gguf")
kit.convert_checkpoint(tiny, root / "native", to="native")
kit.convert_checkpoint(root / "native", root / "back", to="hf")
"""


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask):
    # issue 20: staging folders are mkdtemp's 0700, and save_pretrained's temporary files 0600; once published,
    # every file and folder has what open()/mkdir() give under the caller's umask, as save_pretrained's own outputs.
    result = subprocess.run(
        [sys.executable, "-c", UMASK_OUTPUTS, str(tmp_path)],
        preexec_fn=lambda: os.umask(umask),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outputs = [tmp_path / name for name in ("tiny", "taught", "x.gguf", "native", "back")]
    found = {path: path.stat().st_mode & 0o777 for output in outputs for path in [output, *output.rglob("*")]}
    assert len(found) > 30 and (tmp_path / "tiny" / "model.safetensors") in found
    expected = {path: (0o777 if path.is_dir() else 0o666) & ~umask for path in found}
    assert {path: oct(mode) for path, mode in found.items()} == {path: oct(mode) for path, mode in expected.items()}


def test_a_directory_named_like_a_gguf_file_is_refused(hf_source, tmp_path, run):
    # issue 20: `convert SRC x.gguf --to native` made a folder named x.gguf without a word.
    for to in ("native", "hf"):
        with pytest.raises(ValueError, match=rf"x.gguf is named like a GGUF file, but to='{to}' writes a checkpoint"):
            kit.convert_checkpoint(hf_source, tmp_path / "x.gguf", to=to)
    result = run("convert", str(hf_source), str(tmp_path / "x.GGUF"), "--to", "native")
    assert result.returncode == 2 and result.stdout == ""
    assert "x.GGUF is named like a GGUF file" in result.stderr and "(CLI: --to gguf)" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- the 2025-26 architectures: what converts, and what is refused before anything is written ------------------------


@pytest.mark.parametrize(
    ("kind", "to", "error", "message"),
    [
        ("mistral3", "native", NativeCheckpointError, r"holds a vision-language model \(mistral3\).*Load it from this"),
        ("mistral3", "gguf", NativeCheckpointError, r"holds a vision-language model \(mistral3\)"),
        ("mistral4", "gguf", GGUFError, r"not 'mistral4'; keep the Hugging Face or native checkpoint"),
        ("ministral", "gguf", GGUFError, r"Per-layer sliding windows \(ministral.*convert it to Mistral's native"),
    ],
    ids=["mistral3-native", "mistral3-gguf", "mistral4-gguf", "ministral-gguf"],
)
def test_what_has_no_exact_target_layout_is_refused_and_nothing_is_written(kind, to, error, message, tmp_path):
    source = kit.tiny_model(kind, tokenizer="v1")
    dst = tmp_path / ("out.gguf" if to == "gguf" else "out")
    with pytest.raises(error, match=message):
        kit.convert_checkpoint(source, dst, to=to)
    assert not dst.exists() and leftovers(tmp_path) == []


def test_mistral_large4_is_refused_with_the_route(tmp_path):
    from tiny_configs import available

    if not available("mistral_large4"):  # transformers < 5.2x: the kit cannot even build one
        with pytest.raises(ValueError, match="mistral_large4"):
            kit.tiny_model("mistral_large4", tokenizer="v1")
        return
    source = kit.tiny_model("mistral_large4", tokenizer="v1")
    with pytest.raises(NativeCheckpointError, match=r"holds a vision-language model \(mistral_large4\)"):
        kit.convert_checkpoint(source, tmp_path / "out", to="native")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["ministral", "ministral3", "mistral4"])
def test_new_text_architectures_convert_to_native_and_back(kind, tmp_path):
    """The text models with an exact params.json spelling convert both ways, weights bit for bit (the logits are
    checked in test_formats_native)."""
    from safetensors.torch import load_file

    source = kit.tiny_model(kind, tokenizer="v1")
    native = kit.convert_checkpoint(source, tmp_path / "native", to="native")
    back = kit.convert_checkpoint(native, tmp_path / "back", to="hf")
    original, round_tripped = load_file(source / "model.safetensors"), load_file(back / "model.safetensors")
    assert original.keys() == round_tripped.keys()
    assert all(torch.equal(tensor, round_tripped[key]) for key, tensor in original.items())
    assert leftovers(tmp_path) == []
