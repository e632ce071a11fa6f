"""Weight files: safetensors headers checked before anything is read, lazily read tensors of a set of files
(safetensors memory-mapped, legacy `.pth` via `weights_only`), safetensors written one tensor at a time, and the
permissions the umask gives for what is published (`honour_umask`).

Problems are reported before any weight is read, naming the file and the fix: unreadable or truncated safetensors,
`.pth` files holding anything but tensors.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers.utils.logging import tqdm

from .errors import NativeCheckpointError
from .tensors import LazyTensor

# safetensors' own limit on the JSON header of a file.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


class TensorFiles:
    """Lazily readable tensors of a set of checkpoint files (safetensors memory-mapped, `.pth` via `weights_only`)."""

    def __init__(self, files: list[Path], fix: str):
        self.tensors: dict[str, LazyTensor] = {}
        self._handles: list[Any] = []
        for file in files:
            for key, tensor in self._open(file, fix):
                if key in self.tensors:
                    raise NativeCheckpointError(f"{key!r} appears in more than one file ({file.name} repeats it).")
                self.tensors[key] = tensor

    def _open(self, file: Path, fix: str) -> Iterator[tuple[str, LazyTensor]]:
        if file.suffix == ".safetensors":
            expected_size = safetensors_size(file, fix)
            if file.stat().st_size != expected_size:
                raise NativeCheckpointError(
                    f"{file} is truncated or corrupted: its header describes {expected_size} bytes, the file has "
                    f"{file.stat().st_size}. {fix}"
                )
            try:
                handle = safe_open(file, framework="pt", device="cpu")
            except (SafetensorError, OSError) as error:
                raise NativeCheckpointError(f"{file} is not a readable safetensors file ({error}). {fix}") from error
            self._handles.append(handle)
            offsets = safetensors_offsets(file)
            names = handle.keys()
            for key in names:
                part = handle.get_slice(key)
                dtype = SAFETENSORS_DTYPES.get(part.get_dtype())
                if dtype is None:  # the header was checked; a file changed since is still not a crash
                    raise NativeCheckpointError(f"{file}: tensor {key!r} has dtype {part.get_dtype()}, unsupported.")
                yield key, LazyTensor(part, dtype, tuple(part.get_shape()), location=(file, offsets[key]))
            return
        yield from load_pth(file, fix)

    def close(self) -> None:
        for handle in self._handles:
            handle.__exit__(None, None, None)
        self._handles.clear()


def safetensors_size(file: Path, fix: str) -> int:
    """The file size a safetensors header announces (8-byte length + JSON header + data), after checking the header:
    a JSON object of tensors with a known dtype, a shape and offsets that agree with it. Reads the header only."""
    try:
        if not file.is_file():  # a FIFO would block, a device never ends
            raise ValueError("not a regular file")
        file_size = file.stat().st_size
        with open(file, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{file_size} bytes, too short for a safetensors header")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > min(file_size - 8, MAX_SAFETENSORS_HEADER_BYTES):
                raise ValueError(f"header length {header_size} exceeds the file size or safetensors' limit")
            header = json.loads(stream.read(header_size).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
        data_size = max((_header_entry_end(name, entry) for name, entry in header.items()), default=0)
    except (OSError, ValueError, RecursionError, struct.error) as error:  # UnicodeDecodeError is a ValueError
        raise NativeCheckpointError(f"{file} is not a readable safetensors file ({error}). {fix}") from error
    return 8 + header_size + data_size


def _header_entry_end(name: str, entry: Any) -> int:
    """Where the data of one safetensors header entry ends, or ValueError saying what is wrong with it."""
    if name == "__metadata__":
        if entry is not None and not isinstance(entry, dict):
            raise ValueError("__metadata__ is not an object")
        return 0
    if not isinstance(entry, dict):
        raise ValueError(f"entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        known = ", ".join(SAFETENSORS_DTYPES)
        raise ValueError(f"tensor {name!r} has dtype {dtype!r}; the kit reads {known}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"tensor {name!r} has shape {shape!r}, not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize:
        raise ValueError(f"tensor {name!r}: data_offsets {offsets} do not hold a {dtype} tensor of shape {shape}")
    return offsets[1]


def safetensors_offsets(file: Path) -> dict[str, int]:
    """Where each tensor's data starts in a safetensors file whose header `safe_open` has already accepted."""
    with open(file, "rb") as stream:
        (header_size,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(header_size))
    start = 8 + header_size
    return {name: start + entry["data_offsets"][0] for name, entry in header.items() if name != "__metadata__"}


def load_pth(file: Path, fix: str) -> Iterator[tuple[str, LazyTensor]]:
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) serialization
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for unsafe or broken files
        raise NativeCheckpointError(
            f"{file} cannot be loaded with torch.load(weights_only=True): {str(error).splitlines()[0]}. Only files "
            f"holding a plain dict of tensors are read (arbitrary pickles could run code). {fix}"
        ) from error
    if not isinstance(state, dict):
        raise NativeCheckpointError(f"{file} holds a {type(state).__name__}, expected a dict of tensors. {fix}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise NativeCheckpointError(
                f"{file}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a flat dict of tensors. "
                f"{fix}"
            )
        yield key, LazyTensor(value, value.dtype, tuple(value.shape))


def write_safetensors(path: str | os.PathLike, tensors: list[tuple[str, LazyTensor]]) -> None:
    """Write a safetensors file one tensor at a time (the safetensors API needs every tensor in memory at once).

    The header is computed from the planned dtypes and shapes first; each tensor is then read, checked against its
    plan and appended. The result is a standard safetensors file (little-endian, `format: pt` metadata).
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; writing them on a big-endian machine is unsupported.")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors:
        size = math.prod(tensor.shape) * tensor.dtype.itemsize
        header[name] = {
            "dtype": SAFETENSORS_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    # A progress bar in bytes (transformers' tqdm: `transformers.utils.logging.disable_progress_bar()` hides it).
    progress = tqdm(total=offset, unit="B", unit_scale=True, desc=f"Writing {Path(path).name}")
    with open(path, "wb") as stream, progress:
        stream.write(struct.pack("<Q", len(encoded)))
        stream.write(encoded)
        for name, lazy in tensors:
            tensor = lazy.read()
            if tensor.dtype != lazy.dtype or tuple(tensor.shape) != lazy.shape:
                raise NativeCheckpointError(
                    f"{name}: read {tensor.dtype} {list(tensor.shape)}, planned {lazy.dtype} {list(lazy.shape)}."
                )
            stream.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
            progress.update(tensor.numel() * tensor.element_size())


def honour_umask(path: Path) -> None:
    """Give `path` and, for a directory, everything in it the permissions a plain `open()` or `mkdir()` gives under the
    process's umask: 0644 for files and 0755 for folders under umask 022. Staging directories (`tempfile.mkdtemp`) and
    some files written inside them (temporary files renamed into place) are created owner-only; the published result
    must be readable by whoever the umask lets read it: a team, a serving user. Symbolic links are left alone."""
    mask = current_umask()
    for item in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        if item.is_symlink():
            continue
        item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (Linux's /proc), else set and restored
    at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
