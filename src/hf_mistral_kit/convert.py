"""Converting checkpoints between the layouts the kit reads and writes, with one staging policy.

`convert_checkpoint` reads a Hugging Face or native directory (`formats.dispatch`) and writes the other layout or a
GGUF file (text models: mistral, mixtral, ministral, ministral3 and mistral4 to native; mistral, mixtral and
ministral3 to GGUF; the rest is refused, naming the route, before anything is written), weights read from memory
maps and written out one at a time. Every output is built in a staging directory beside its destination and only
renamed into place once complete: a SIGTERM removes it (and still ends the process as
the signal would have), and staging directories a killed process left behind are removed by the next run. What is
published gets the permissions the process's umask gives new files and folders (`honour_umask`), as transformers'
`save_pretrained` does, although staging directories are private while they are built. Files copied from the source
must belong to it (`check_checkpoint_file`: no FIFOs, no symbolic links leading out of it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from .formats import names
from .formats.dispatch import local_checkpoint
from .formats.errors import GGUFError, NativeCheckpointError
from .formats.files import honour_umask, write_safetensors
from .formats.gguf import GGUF_DTYPES, write_gguf
from .formats.huggingface import HF_SAFETENSORS, fused_hf_tensors
from .formats.native import PARAMS_FILE, write_native
from .tokenizers.loading import TOKENIZER_FILE_PATTERN, kit_tokenizer_file, load_tokenizer

LAYOUTS = ("hf", "native", "gguf")

logger = logging.getLogger(__name__)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: Literal["hf", "native", "gguf"],
    dtype: Literal["f32", "f16", "bf16", "q8_0"] | None = None,
) -> Path:
    """Convert a checkpoint directory between the Hugging Face and Mistral native layouts, or to a GGUF file.

    `to="native"` reads an HF text-model directory (mistral, mixtral, ministral, ministral3, mistral4: `config.json` +
    safetensors, experts fused or per expert) and writes `params.json` + `consolidated.safetensors`; `to="hf"` reads a
    native directory and writes `config.json`, `generation_config.json` and `model.safetensors` (Mixtral experts per
    expert, as `save_pretrained` writes them; Mistral 4's fused, the only layout transformers loads them from).
    Tokenizer files are copied along. `to="gguf"` reads either layout (kit-saved folders included) and writes the
    llama.cpp file `dst` (see `hf_mistral_kit.formats.gguf.write_gguf`) with weights in `dtype` ("f32", "f16", "bf16",
    "q8_0"; default: the checkpoint's own float type). Peak memory is about one tensor (one layer's experts for a
    Mixtral GGUF): weights are read from memory maps and written out one at a time. `dst` must not exist yet (or be an
    empty directory); it only appears once the conversion has succeeded.
    """
    src, dst = Path(src), Path(dst)
    if to not in LAYOUTS:
        raise ValueError(f"to must be 'hf', 'native' or 'gguf', got {to!r}.")
    if to == "gguf":
        if dtype is not None and dtype not in GGUF_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}.")
        if dst.exists():
            raise FileExistsError(f"{dst} already exists; pick a new destination.")
    else:
        if dtype is not None:
            raise ValueError("dtype only applies to to='gguf'; the safetensors layouts keep the weights' dtype.")
        if dst.suffix.lower() == ".gguf":
            raise ValueError(
                f"{dst.name} is named like a GGUF file, but to={to!r} writes a checkpoint directory: convert with "
                "to='gguf' (CLI: --to gguf) for a GGUF file, or name the directory without .gguf."
            )
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise FileExistsError(f"{dst} already exists and is not empty; pick a new destination.")
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a checkpoint directory.")

    dst.parent.mkdir(parents=True, exist_ok=True)
    with staged(dst, file=to == "gguf") as staging:
        source = local_checkpoint(src)
        if to == "gguf":
            if source is None:
                raise GGUFError(f"{src} is neither a Hugging Face (config.json) nor a native (params.json) checkpoint.")
            with source.open() as checkpoint:
                native, config = checkpoint.native_tensors, checkpoint.config
                write_gguf(native, config, src, staging / dst.name, dtype, name=src.name, label=dst.name)
            return dst
        if to == "native" and (source is None or source.layout != "hf"):
            raise NativeCheckpointError(f"{src} is not a Hugging Face checkpoint (no config.json).")
        if to == "hf" and (source is None or source.layout != "native"):
            raise NativeCheckpointError(
                f"{src} is not a native checkpoint (it needs {PARAMS_FILE} and no config.json)."
            )
        with source.open() as checkpoint:
            if to == "native":
                write_native(checkpoint.native_tensors, checkpoint.config, staging)
            else:
                if checkpoint.vision_left_out:
                    logger.warning(
                        "%s is a vision-language release (`vision_encoder` in %s): %s gets its text model only, "
                        "without the vision encoder (load the Hugging Face release for the whole model).",
                        src,
                        PARAMS_FILE,
                        dst,
                    )
                _write_hf(checkpoint, staging)
        _copy_tokenizer(src, staging)
    return dst


def _write_hf(checkpoint: Any, dst: Path) -> None:
    """config.json, generation_config.json and model.safetensors of a checkpoint (transformers' own config class
    writes config.json, with the upstream model_type)."""
    from transformers import AutoConfig, GenerationConfig

    config_dict = dict(checkpoint.config)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    tensors = fused_hf_tensors(checkpoint.hf_state_dict(), checkpoint.config)
    config.dtype = next(iter(tensors.values())).dtype
    write_safetensors(dst / HF_SAFETENSORS, sorted(tensors.items(), key=lambda item: names.natural_key(item[0])))
    config.save_pretrained(dst)
    src = checkpoint.source
    if (src / "generation_config.json").is_file():
        copy_from_checkpoint(src, src / "generation_config.json", dst)
    else:
        GenerationConfig.from_model_config(config).save_pretrained(dst)


# --- staging directories and copied files -----------------------------------------------------------------------

# Written into every staging directory: which process on which host builds it, so that a later run can tell a
# directory left behind by a killed process (SIGKILL, power loss) from one still being written.
STAGING_MARKER = ".hf-mistral-kit-staging"


@contextmanager
def staged(dst: Path, *, file: bool = False) -> Iterator[Path]:
    """A staging directory to build `dst` in: on success it becomes `dst` (or, with `file`, its file `dst.name`
    does); on any failure, SIGTERM included, it is removed.

    A SIGTERM that arrives while the directory is created or the result put in place takes effect right after, so
    that no step is left half done; a process killed outright (SIGKILL) leaves a directory `staging_dir` recognizes.
    """
    with removed_on_sigterm() as sigterm:
        staging = None
        try:
            with sigterm.deferred():
                staging = staging_dir(dst)
            yield staging
            honour_umask(staging / dst.name if file else staging)
            with sigterm.deferred():
                if file:
                    (staging / dst.name).replace(dst)
                    _remove_staging_dir(staging)
                else:
                    if dst.exists():
                        dst.rmdir()
                    staging.rename(dst)
                    (dst / STAGING_MARKER).unlink()  # last: killed before it, the complete `dst` keeps a stray marker
        except BaseException as error:
            if staging is not None:
                with sigterm.deferred():
                    _remove_staging_dir(staging)
            if isinstance(error, _Terminated):  # the process ends with SIGTERM's status: say why, and what is left
                logger.warning("terminated by SIGTERM: %s was not written (its unfinished files are removed).", dst)
            raise


def staging_dir(dst: Path) -> Path:
    """A new hidden directory beside `dst` to build it in (renamed to `dst` when complete), named
    `.DST.partial-PID-XXXXXXXX` after the process that builds it and holding STAGING_MARKER.

    Staging directories that an earlier process left beside `dst` when it was killed are removed first, with a warning.
    """
    for stale in _stale_staging_dirs(dst.parent):
        _remove_staging_dir(stale)
        warnings.warn(f"removed {stale}, left behind by an interrupted conversion or build.", stacklevel=3)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-{os.getpid()}-", dir=dst.parent))
    (staging / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    return staging


def _remove_staging_dir(staging: Path) -> None:
    """Remove a staging directory, its marker last: a process killed while removing it leaves a directory that is
    still recognizably a staging one (see `_stale_staging_dirs`)."""
    try:
        entries = [entry for entry in staging.iterdir() if entry.name != STAGING_MARKER]
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (staging / STAGING_MARKER).unlink(missing_ok=True)
    with suppress(OSError):  # something appeared in it meanwhile, or it is gone: not ours to force
        staging.rmdir()


# `staging_dir`'s names: `.DST.partial-PID-` and tempfile's eight random characters.
_STAGING_NAME = re.compile(r"\..+\.partial-(?P<pid>[0-9]+)-[a-z0-9_]{8}")


def _stale_staging_dirs(parent: Path) -> list[Path]:
    """Staging directories in `parent` whose process is gone: marked by a process of this host that no longer runs,
    or, unmarked (killed between creating the directory and completing its marker, or while removing it), empty
    but for an unreadable marker and named after a process of this host that no longer runs."""
    stale = []
    for path in parent.glob(".*.partial-*"):
        try:
            owner = json.loads((path / STAGING_MARKER).read_text())
            pid, host = int(owner["pid"]), owner["host"]
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, None  # missing, half written, or not ours: judged by its name and contents below
        if pid is None:
            name = _STAGING_NAME.fullmatch(path.name)
            try:
                empty = path.is_dir() and all(entry.name == STAGING_MARKER for entry in path.iterdir())
            except OSError:
                continue
            if name is None or not empty:
                continue  # not ours, or a complete directory someone else made: left alone
            pid, host = int(name["pid"]), socket.gethostname()
        if host == socket.gethostname() and not _process_alive(pid):
            stale.append(path)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: leave its directory alone
    return True


class _SigtermState:
    """What `removed_on_sigterm` yields: `deferred()` holds a SIGTERM back until the end of a block."""

    def __init__(self, active: bool):
        self.active = active
        self.held = False
        self.pending = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A SIGTERM arriving within the block raises when the block ends (at once if it was already held)."""
        if not self.active or self.held:
            yield
            return
        self.held = True
        try:
            yield
        finally:
            self.held = False
            if self.pending:
                self.pending = False
                raise _Terminated


@contextmanager
def removed_on_sigterm() -> Iterator[_SigtermState]:
    """Within the block, SIGTERM raises (so `except BaseException` clean-ups run) and then ends the process as the
    signal would have. Only in the main thread and when nobody else handles SIGTERM; otherwise does nothing (and the
    yielded state's `deferred()` neither)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield _SigtermState(active=False)
        return
    state = _SigtermState(active=True)

    def terminate(signum: int, frame: Any) -> None:
        if state.held:
            state.pending = True
            return
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield state
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # dies here, with the status a SIGTERM gives
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Terminated(BaseException):
    """SIGTERM arrived inside `removed_on_sigterm`."""


# Files a tokenizer is read from besides TOKENIZER_FILE_PATTERN's.
_TOKENIZER_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "chat_template.jinja")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """Carry the tokenizer over: a Mistral tokenizer the kit templates (SentencePiece or tekken.json) is written the
    way the kit saves tokenizers (tokenizer.json, tokenizer_config.json, chat template and Mistral's own file), so
    that every consumer reads the converted checkpoint exactly; other tokenizer files are copied as they are.
    Files the tokenizer is read from pass the same checks as copied ones."""
    files = [file for file in sorted(src.iterdir()) if TOKENIZER_FILE_PATTERN.match(file.name)]
    if kit_tokenizer_file(src) is None:
        for file in files:
            copy_from_checkpoint(src, file, dst)
        return
    for file in files + [src / name for name in _TOKENIZER_SIDE_FILES if (src / name).exists()]:
        check_checkpoint_file(src, file)
    load_tokenizer(src).save_pretrained(dst)
    for file in files:  # nothing is lost: other tokenizer files of SRC come along as they are
        if not (dst / file.name).exists():
            shutil.copy2(file, dst / file.name)


def copy_from_checkpoint(src: Path, file: Path, dst: Path) -> None:
    """Copy `file` of checkpoint `src` into `dst`, refusing what would copy something else than the checkpoint
    (`check_checkpoint_file`)."""
    check_checkpoint_file(src, file)
    shutil.copy2(file, dst / file.name)


def check_checkpoint_file(src: Path, file: Path) -> None:
    """Refuse a file of checkpoint `src` that is not part of it: non-regular files, and symbolic links that lead out
    of `src` (a Hugging Face cache snapshot's links into its repository's `blobs/` are fine)."""
    if not file.is_file():
        raise NativeCheckpointError(
            f"{file} is not a regular file (a directory, FIFO, device or broken link): remove it or replace it with "
            "the file itself."
        )
    if file.is_symlink():
        target, root = file.resolve(), src.resolve()
        allowed = [root] + ([root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [])
        if not any(target.is_relative_to(folder) for folder in allowed):
            raise NativeCheckpointError(
                f"{file} is a symbolic link to {target}, outside {src}: refusing to copy that file into the "
                "converted checkpoint (publishing it would publish the file). Replace the link with a copy of the "
                "file if it belongs to the checkpoint, or remove it."
            )
