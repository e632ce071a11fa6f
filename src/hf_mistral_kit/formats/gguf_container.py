"""The GGUF container read by the kit itself: metadata and tensor index, bounded before anything is decoded.

The `gguf` package's `GGUFReader` builds numpy views for every item of every metadata array (about 1 KB each: a
262144-token vocabulary costs it 800 MB and 11 s, a 3,000,000-token one exhausts memory). The kit walks the header
itself instead: an array's length and a string's size are checked against the bounds below before anything of them is
decoded, values are decoded straight to Python objects (numeric arrays in one numpy call), and each value keeps the
GGUF type it is stored as (`StoredType`), which `gguf` compares with the type each key it reads must have. Tensors are
views of a copy-on-write memory map, as `GGUFReader` makes them (quantized types as rows of bytes).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError
from .hyperparameters import MAX_VOCAB, shown

# Kinds of GGUF value: what a key's stored type is checked against (any integer type for an integer key, ...).
INTEGER, FLOAT, BOOL, STRING, ARRAY = "integer", "float", "bool", "string", "array"

# The metadata is decoded whole, so a file may not make it larger than a Mistral model's: no array longer than a
# vocabulary; in all, no more keys and array items than four vocabulary-sized arrays (tokens, scores, token types,
# BPE merges) and far less text than 64 MB (a vocabulary's pieces and chat templates take a few MB; some old files
# embed a whole tokenizer.json, a few MB more).
MAX_METADATA_ITEMS = 4 * MAX_VOCAB
MAX_METADATA_TEXT = 64 << 20
# A Mistral/Mixtral GGUF has ~9 tensors per layer (~33 with one tensor per expert, as llama.cpp's first Mixtral files
# were written): under 2,000 for Mixtral-8x22B's 56 layers. The index is read whole, so it is bounded too.
MAX_TENSORS = 1 << 16
GGML_MAX_DIMS = 4  # llama.cpp's tensors have at most 4 dimensions
GGUF_VERSIONS = (2, 3)  # what the `gguf` package reads; version 1 (August 2023) predates 64-bit sizes
# Tensor types stored as numpy element types; the others (quantized, BF16) are rows of bytes.
_ELEMENT_TYPES = {
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}


@dataclass(frozen=True)
class StoredType:
    """The GGUF type a metadata value is stored as: its kind, and for an array its items' kind and length."""

    kind: str
    items: str | None = None
    length: int = 0

    def describe(self, value: Any) -> str:
        """E.g. "a float (2.5)", "an array of 2 integers ([2, 2])", as error messages say what a key holds."""
        if self.kind != ARRAY:
            return f"{_article(self.kind)} ({shown(value)})"
        if not self.length:
            return f"an empty array of {self.items}s"
        return f"an array of {self.length} {self.items}{'s' if self.length > 1 else ''} ({shown(value)})"


def kind_text(kind: str, items: str | None = None) -> str:
    """'an integer', 'an array of strings': what a key must hold."""
    return f"an array of {items}s" if kind == ARRAY else _article(kind)


def _article(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the index: `shape` in GGUF's order (fastest-varying first), `data` a view of the file in numpy's
    order (quantized types as rows of bytes, as `gguf.dequantize` takes them)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    n_bytes: int
    data_offset: int
    data: np.ndarray


@dataclass(frozen=True)
class GGUFContainer:
    """A GGUF file's metadata (key -> value, arrays as lists), the type each value is stored as, and its tensors."""

    path: Path
    fields: dict[str, Any]
    types: dict[str, StoredType]
    tensors: list[GGUFTensor]


@functools.cache
def _value_types() -> dict[int, tuple[str, str]]:
    """GGUF value type -> (struct format, kind) for the scalar types."""
    from gguf import GGUFValueType as V

    return {
        V.UINT8: ("B", INTEGER),
        V.INT8: ("b", INTEGER),
        V.UINT16: ("H", INTEGER),
        V.INT16: ("h", INTEGER),
        V.UINT32: ("I", INTEGER),
        V.INT32: ("i", INTEGER),
        V.UINT64: ("Q", INTEGER),
        V.INT64: ("q", INTEGER),
        V.FLOAT32: ("f", FLOAT),
        V.FLOAT64: ("d", FLOAT),
        V.BOOL: ("?", BOOL),
    }


def value_kind(type_name: str) -> str:
    """The kind of a `gguf.GGUFValueType` name ("UINT32" -> integer)."""
    from gguf import GGUFValueType as V

    value_type = V[type_name]
    return {V.STRING: STRING, V.ARRAY: ARRAY}.get(value_type) or _value_types()[value_type][1]


class _Header:
    """A cursor over the header: every read is checked against the end of the file and the metadata bounds."""

    def __init__(self, path: Path, buffer: Any):
        self.path, self.buffer, self.offset = path, buffer, 0
        self.order = "<"
        self.items = self.text = 0
        self.key = "the header"

    def truncated(self) -> GGUFError:
        return GGUFError(
            f"{self.path} is truncated or corrupted ({self.key} ends past the end of the file). Download it again "
            "(compare its size with the source's)."
        )

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(self.order + fmt)
        if self.offset + size > len(self.buffer):
            raise self.truncated()
        values = struct.unpack_from(self.order + fmt, self.buffer, self.offset)
        self.offset += size
        return values

    def string(self) -> str:
        (length,) = self.take("Q")
        self.text += length
        if self.text > MAX_METADATA_TEXT:
            raise GGUFError(
                f"{self.path}: its metadata holds more than {MAX_METADATA_TEXT >> 20} MB of text (at {self.key}), "
                "far more than a Mistral model's vocabulary and chat template; the kit refuses the file before "
                "reading it. It is not a Mistral/Mixtral GGUF, or it is corrupted."
            )
        if self.offset + length > len(self.buffer):
            raise self.truncated()
        start, self.offset = self.offset, self.offset + length
        try:
            return str(self.buffer[start : self.offset], "utf-8")
        except UnicodeDecodeError as error:
            raise GGUFError(f"{self.path}: {self.key} holds text that is not UTF-8 ({error.reason}).") from None

    def unique_string(self, seen: Container[str], what: str) -> str:
        """A name (a metadata key, a tensor name) that must not be one of `seen`; `what` ("tensor {!r}") names it."""
        name = self.string()
        if name in seen:
            raise GGUFError(
                f"{self.path}: {what.format(name)} appears twice; the file is corrupted: download or convert it again."
            )
        return name

    def count(self, length: int, what: str) -> None:
        """Account for `length` more entries of the metadata before any of them is read."""
        self.items += length
        if self.items > MAX_METADATA_ITEMS:
            raise GGUFError(
                f"{self.path}: {what} bring its metadata to more than {MAX_METADATA_ITEMS} keys and array entries, "
                "more than four vocabulary-sized arrays; the kit refuses the file before reading it. It is not a "
                "Mistral/Mixtral GGUF, or it is corrupted."
            )

    def value(self, value_type: int) -> tuple[Any, StoredType]:
        from gguf import GGUFValueType as V

        scalar = _value_types().get(value_type)
        if scalar is not None:
            return self.take(scalar[0])[0], StoredType(scalar[1])
        if value_type == V.STRING:
            return self.string(), StoredType(STRING)
        if value_type != V.ARRAY:
            raise GGUFError(f"{self.path}: {self.key} has GGUF value type {value_type}, which does not exist.")
        item_type, length = self.take("IQ")
        if length > MAX_VOCAB:
            raise GGUFError(
                f"{self.path}: {self.key} is an array of {length} entries, more than the largest vocabulary the kit "
                f"accepts ({MAX_VOCAB}); no metadata of a Mistral/Mixtral GGUF is longer. The kit refuses the file "
                "before reading the array: it is not such a model, or it is corrupted."
            )
        self.count(length, f"the {length} entries of {self.key}")
        scalar = _value_types().get(item_type)
        if scalar is not None:  # one numpy read for the whole array
            fmt = scalar[0]
            size = struct.calcsize(self.order + fmt) * length
            if self.offset + size > len(self.buffer):
                raise self.truncated()
            dtype = np.dtype(np.bool_ if fmt == "?" else self.order + fmt)
            items = np.frombuffer(self.buffer, dtype, length, self.offset).tolist()
            self.offset += size
            return items, StoredType(ARRAY, scalar[1], length)
        if item_type == V.STRING:
            return [self.string() for _ in range(length)], StoredType(ARRAY, STRING, length)
        what = "arrays, which llama.cpp does not read either" if item_type == V.ARRAY else f"type {item_type}"
        raise GGUFError(f"{self.path}: {self.key} is an array of {what}; the file is corrupted.")


def read_gguf_container(path: Path) -> GGUFContainer:
    """Read the metadata and tensor index of the GGUF file `path` (which starts with the GGUF magic), bounded (see
    `MAX_METADATA_ITEMS`); tensor data stays in the (copy-on-write) memory map."""
    from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, quant_shape_to_byte_shape

    # Copy-on-write mapping: tensors are writable views of the file (torch wants that), the file never changes.
    data = np.memmap(path, mode="c")
    header = _Header(path, memoryview(data))
    header.take("4s")
    (version,) = header.take("I")
    if version & 0xFFFF == 0:  # written on a big-endian machine
        header.order = ">"
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in GGUF_VERSIONS:
        raise GGUFError(
            f"{path} is GGUF version {version}; the kit reads versions {GGUF_VERSIONS[0]} and {GGUF_VERSIONS[-1]} "
            "(llama.cpp's since August 2023). Convert the model again with a current llama.cpp."
        )
    tensor_count, key_count = header.take("QQ")
    header.count(key_count, f"{key_count} keys")
    fields: dict[str, Any] = {}
    types: dict[str, StoredType] = {}
    for index in range(key_count):
        header.key = f"metadata key {index}"
        key = header.unique_string(fields, "metadata key {}")
        header.key = key
        (value_type,) = header.take("I")
        fields[key], types[key] = header.value(value_type)

    alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    stored = types.get("general.alignment", StoredType(INTEGER))
    if stored.kind != INTEGER or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(
            f"{path}: general.alignment is stored as {stored.describe(alignment)}; it must be an integer, a power of "
            "two. The file is corrupted."
        )
    if tensor_count > MAX_TENSORS:
        raise GGUFError(
            f"{path}: its header announces {tensor_count} tensors, more than any Mistral/Mixtral GGUF has (the kit "
            f"reads at most {MAX_TENSORS}); the kit refuses the file before reading them. It is not such a model, or "
            "it is corrupted: download or convert it again."
        )
    index = []
    names = set()
    for number in range(tensor_count):
        header.key = f"tensor {number}"
        name = header.unique_string(names, "tensor {!r}")
        names.add(name)
        header.key = f"tensor {name!r}"
        (dims,) = header.take("I")
        if not 1 <= dims <= GGML_MAX_DIMS:
            raise GGUFError(f"{path}: tensor {name!r} has {dims} dimensions; GGUF tensors have 1 to {GGML_MAX_DIMS}.")
        shape = header.take(f"{dims}Q")
        raw_type, offset = header.take("IQ")
        index.append((name, shape, raw_type, offset))
    start = header.offset + (-header.offset % alignment)

    tensors = []
    for name, shape, raw_type, offset in index:
        try:
            tensor_type = GGMLQuantizationType(raw_type)
            block, size = GGML_QUANT_SIZES[tensor_type]
        except (ValueError, KeyError):
            raise GGUFError(
                f"{path}: tensor {name!r} has type {raw_type}, which the installed gguf package does not know; "
                "upgrade it (pip install -U gguf)."
            ) from None
        elements = math.prod(shape)
        if shape[0] % block:
            raise GGUFError(f"{path}: tensor {name!r} has rows of {shape[0]}, not whole {tensor_type.name} blocks.")
        n_bytes = elements // block * size
        data_offset = start + offset
        if data_offset + n_bytes > len(data):
            raise GGUFError(f"{path} is truncated: tensor {name!r} ends past the end of the file.")
        dims = tuple(reversed(shape))
        item = _ELEMENT_TYPES.get(tensor_type.name)
        if item is None:
            view = data[data_offset : data_offset + n_bytes].reshape(quant_shape_to_byte_shape(dims, tensor_type))
        else:
            dtype = np.dtype(item).newbyteorder(header.order)
            view = data[data_offset : data_offset + n_bytes].view(dtype).reshape(dims)
        tensors.append(GGUFTensor(name, tensor_type, shape, n_bytes, data_offset, view))
    return GGUFContainer(path, fields, types, tensors)
