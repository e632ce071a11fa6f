"""Turning a MODEL argument into a loaded model, with user errors mapped to exit codes before any weight is read.

A MODEL is a local checkpoint directory or a Hugging Face hub id. Whatever does not exist locally and looks like a
path fails at once (no Hub lookup); a hub id is looked up in the local Hugging Face cache first, and the Hub is only
asked (once, with a short timeout, before transformers' retrying downloads) when that is allowed and needed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import CLIError, ExitCode

GiB = 2**30
# Names a hub id cannot have but a path has: a file suffix of the formats the kit reads.
_FILE_SUFFIXES = (".json", ".safetensors", ".gguf", ".pth", ".bin", ".model", ".jsonl")
_TRUE = {"1", "on", "yes", "true"}
_HUB_TIMEOUT_SECONDS = 5.0


def model_source(value: str, *, what: str = "model") -> str:
    """`value` if it is an existing path or a hub id that can be had; a MISSING error naming the fix otherwise."""
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(value):
        raise CLIError(f"{what} {value} does not exist (no such file or directory).", ExitCode.MISSING)
    if not _is_hub_id(value):
        raise CLIError(
            f"{what} {value} does not exist: it is neither a local path nor a Hugging Face hub id (org/name).",
            ExitCode.MISSING,
        )
    cached = _in_hub_cache(value)
    if hub_offline():
        if not cached:
            raise CLIError(
                f"{what} {value} is not a local directory and not in the Hugging Face cache, and HF_HUB_OFFLINE is "
                "set, so it cannot be downloaded: pass a local checkpoint directory, or unset HF_HUB_OFFLINE.",
                ExitCode.MISSING,
            )
        return value
    problem = _hub_unreachable()
    if problem is None:
        return value
    if cached:
        os.environ["HF_HUB_OFFLINE"] = "1"  # transformers would retry the Hub for a minute before using the cache
        _set_hub_offline()
        print(f"note: the Hugging Face Hub is unreachable ({problem}): using the cached {value}.", file=sys.stderr)
        return value
    raise CLIError(
        f"{what} {value} is not a local directory, and the Hugging Face Hub is unreachable ({problem}) to download "
        "it: check the network (or HF_ENDPOINT / proxy settings), or pass a local checkpoint directory. "
        "HF_HUB_OFFLINE=1 uses the local Hugging Face cache only.",
        ExitCode.MISSING,
    )


def _looks_like_path(value: str) -> bool:
    return (
        not value.strip()
        or os.path.isabs(value)
        or value.startswith((".", "~"))
        or "\\" in value
        or value.count("/") > 1
        or value.lower().endswith(_FILE_SUFFIXES)
    )


def _is_hub_id(value: str) -> bool:
    return re.fullmatch(r"(?:[\w.-]+/)?[\w.-]+", value) is not None and ".." not in value and "--" not in value


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, as huggingface_hub reads it."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _set_hub_offline() -> None:
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _in_hub_cache(repo_id: str) -> bool:
    """A config of `repo_id` is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    from ..formats.native import DESCRIPTION_FILES

    for filename in DESCRIPTION_FILES:
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except ValueError:  # an id huggingface_hub refuses
            return False
    return False


def _hub_unreachable() -> str | None:
    """None if one quick request reaches the Hub's endpoint (with the hub client's own proxy settings), else why not."""
    try:
        from huggingface_hub import constants, get_session

        get_session().head(constants.ENDPOINT, timeout=_HUB_TIMEOUT_SECONDS)
    except Exception as error:  # any failure of a probe means: downloading would not work either
        text = str(error).strip().splitlines()
        return text[0][:160] if text else type(error).__name__
    return None


def checkpoint_dir(value: str, *, what: str = "model") -> str:
    """`model_source` for commands that load weights: a local path must be a checkpoint directory or a GGUF file."""
    from ..formats.gguf import is_gguf_file

    source = model_source(value, what=what)
    path = Path(source)
    if path.exists() and not path.is_dir() and not is_gguf_file(path):
        raise CLIError(
            f"{value} is a file, and not a GGUF one; MODEL is a checkpoint directory (config.json or params.json "
            "with the weights), a GGUF file (model.gguf) or a hub id.",
        )
    return source


def model_config(source: str) -> Any:
    """What the planner reads: the local path itself (checked), or a hub model's config."""
    path = Path(source)
    if path.exists():
        if path.is_dir():
            from ..formats.native import DESCRIPTION_FILES

            names = [path / name for name in DESCRIPTION_FILES if (path / name).exists()]
            if not names:
                raise CLIError(f"{source} has no config.json or params.json: not a checkpoint.", ExitCode.MISSING)
            if not any(name.is_file() for name in names):
                raise CLIError(f"{names[0]} is not a regular file (a directory, FIFO or device); restore the file.")
        return source
    from ..auto import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except OSError as error:
        raise CLIError(f"cannot find model {source}: {_first_line(error)}", ExitCode.MISSING) from None
    except ValueError as error:
        raise CLIError(f"cannot read the config of {source}: {_first_line(error)}") from None


def model_shape(config: Any, label: str) -> Any:
    """The validated `ModelShape` of a Mistral-family config (path, dict or config object), labelled `label`: what
    `load_model` loads of it (a vision-language wrapper's text model, or the whole Large line)."""
    from ..planning.memory import ModelShape

    try:
        shape = ModelShape.from_config(config, mistral_only=True, vision=None)
    except FileNotFoundError as error:
        raise CLIError(str(error), ExitCode.MISSING) from None
    except (ValueError, TypeError, OSError) as error:
        raise CLIError(_first_line(error)) from None
    return shape.labelled(label)


def resolve(preset: str, shape: Any, hardware: Any, *, context_length: int) -> Any:
    """`resolve_preset` with its failures as CLI errors: OUT_OF_MEMORY when the plan says it does not fit."""
    from ..planning.presets import DoesNotFitError, PresetError, resolve_preset

    try:
        return resolve_preset(preset, hardware, model=shape, context_length=context_length)
    except DoesNotFitError as error:
        raise CLIError(f"predicted out of memory: {error}", ExitCode.OUT_OF_MEMORY) from None
    except PresetError as error:
        raise CLIError(str(error)) from None
    except (ImportError, ValueError) as error:
        raise CLIError(str(error)) from None


def check_weights(source: str) -> None:
    """Refuse truncated or malformed safetensors files of a local Hugging Face checkpoint before loading it (native
    checkpoints are checked by their loader). Reads the headers only."""
    from ..formats.errors import NativeCheckpointError
    from ..formats.files import safetensors_size
    from ..formats.native import CONFIG_FILE

    directory = Path(source)
    if not directory.is_dir() or not (directory / CONFIG_FILE).is_file():
        return
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CLIError(f"{index} is not a readable safetensors index ({error}).") from None
        files = [directory / name for name in names]
        for file in files:
            if not file.exists():
                raise CLIError(f"{index} lists {file.name}, which is missing: re-download it.", ExitCode.MISSING)
    else:
        files = sorted(directory.glob("*.safetensors"))
    fix = f"Re-download it into {directory}."
    for file in files:
        try:
            size = safetensors_size(file, fix)
            if file.stat().st_size != size:
                raise CLIError(
                    f"{file} is truncated or corrupted: its header describes {size} bytes, the file has "
                    f"{file.stat().st_size}. {fix}"
                )
        except NativeCheckpointError as error:
            raise CLIError(str(error)) from None


def out_of_memory(plan: Any, alternatives: str = "") -> CLIError:
    """The one-line error for a plan that does not fit."""
    return CLIError(
        f"predicted out of memory: preset {plan.preset!r} needs {plan.device_bytes / GiB:.1f} GiB for "
        f"{plan.context_length} tokens x batch {plan.batch_size}, {plan.available_bytes / GiB:.1f} GiB available "
        f"{plan.placement_text}. {alternatives or 'Try a shorter --context or a smaller --batch-size.'}",
        ExitCode.OUT_OF_MEMORY,
    )


@contextmanager
def loading_errors(source: str) -> Iterator[None]:
    """What loading a checkpoint raises for user mistakes (missing files, bad configs), as CLI errors."""
    try:
        yield
    except OSError as error:
        raise CLIError(f"cannot load {source}: {_first_line(error)}", ExitCode.MISSING) from None
    except (ValueError, ImportError) as error:
        raise CLIError(f"cannot load {source}: {_first_line(error)}") from None
    except Exception as error:
        if type(error).__name__ != "SafetensorError":  # a weights file broken in a way its header does not show
            raise
        raise CLIError(f"cannot load {source}: a safetensors file is corrupted ({_first_line(error)}).") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
