"""GGUF files the tests build: copies of a kit-written file with edited metadata or tensors (`rewrite`), ones with a
vocabulary of any size (`with_vocabulary`, written with numpy: GGUFWriter would take minutes and gigabytes for
millions of tokens), and raw headers (`raw_gguf`, `entry`) for what no writer produces. The gguf package's own reader
reads the sources, so that the kit's reader is not its own judge."""

from __future__ import annotations

import struct

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

NO_VOCABULARY = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
ARRAY, STRING, FLOAT32, INT32 = GGUFValueType.ARRAY, GGUFValueType.STRING, GGUFValueType.FLOAT32, GGUFValueType.INT32


def rewrite(
    src, dst, *, set_fields=None, drop_fields=(), replace=None, drop_tensors=(), add_tensors=None, endianess=None
):
    """Copy GGUF `src` to `dst` with edits: fields set {name: (value, type[, array item type])} or dropped, tensors
    replaced {name: (raw data, type)}, dropped or added {name: float32 array}; written big-endian with
    `endianess=GGUFEndian.BIG`."""
    reader = GGUFReader(src)
    fields = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop_fields:
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        fields[name] = (field.contents(), field.types[0], sub_type)
    for name, (value, kind, *sub_type) in (set_fields or {}).items():
        if kind == GGUFValueType.ARRAY and not sub_type:
            sub_type = [GGUFValueType.STRING if isinstance(value[0], str) else GGUFValueType.INT32]
        fields[name] = (value, kind, sub_type[0] if sub_type else None)
    architecture = (set_fields or {}).get("general.architecture", ("llama",))[0]
    fields.pop("general.architecture", None)
    writer = GGUFWriter(dst, architecture, **({"endianess": endianess} if endianess else {}))
    for name, (value, kind, sub_type) in fields.items():
        writer.add_key_value(name, value, kind, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.name in drop_tensors:
            continue
        data, kind = (replace or {}).get(tensor.name, (tensor.data, tensor.tensor_type))
        writer.add_tensor(tensor.name, np.ascontiguousarray(data), raw_dtype=kind)
    for name, array in (add_tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def raw_gguf(path, keys, *, tensors=0):
    """A GGUF file of a header only: `keys` is (the key count it announces, the raw entries that follow)."""
    path.write_bytes(struct.pack("<IIQQ", 0x46554747, 3, tensors, keys[0]) + keys[1])
    return path


def entry(key, value_type, payload):
    """One raw metadata entry: the key, its GGUF value type and `payload`, the value's bytes as stored."""
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", value_type) + payload


def with_vocabulary(src, dst, size):
    """`src` with a vocabulary of `size` tokens (t0000000, t0000001, ...), written with numpy: what GGUFWriter would
    take minutes and gigabytes for."""
    reader = GGUFReader(rewrite(src, dst.with_suffix(".base.gguf"), drop_fields=NO_VOCABULARY))
    fields = [field for name, field in reader.fields.items() if not name.startswith("GGUF.")]
    span = lambda field: bytes(reader.data[field.offset : field.offset + sum(int(p.nbytes) for p in field.parts)])  # noqa: E731
    tokens = np.zeros(size, dtype=[("length", "<u8"), ("text", "S8")])
    tokens["length"] = 8
    tokens["text"] = np.char.add(b"t", np.char.zfill(np.arange(size).astype("S7"), 7))
    arrays = {
        "tokenizer.ggml.tokens": (STRING, tokens),
        "tokenizer.ggml.scores": (FLOAT32, np.zeros(size, "<f4")),
        "tokenizer.ggml.token_type": (INT32, np.ones(size, "<i4")),
    }
    metadata = b"".join(span(field) for field in fields) + b"".join(
        entry(key, ARRAY, struct.pack("<IQ", item, size) + items.tobytes()) for key, (item, items) in arrays.items()
    )
    infos = b"".join(span(tensor.field) for tensor in reader.tensors)
    header = struct.pack("<IIQQ", 0x46554747, 3, len(reader.tensors), len(fields) + 3) + metadata + infos
    with open(dst, "wb") as out:
        out.write(header + bytes(-len(header) % reader.alignment))
        out.write(memoryview(reader.data[reader.data_offset :]))
    return dst


def with_architecture(src, dst, architecture, *, set_fields=None, drop_fields=()):
    """`src` filed under another llama.cpp architecture: `general.architecture` and the prefix of every key of the old
    one renamed (as llama.cpp's converter names them), then `set_fields` (new keys, under the new prefix) and
    `drop_fields` applied as `rewrite` does."""
    reader = GGUFReader(src)
    old = reader.fields["general.architecture"].contents()
    renamed, dropped = {}, [*drop_fields, *NO_VOCABULARY]
    for name, field in reader.fields.items():
        if name.startswith(old + "."):
            sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            renamed[architecture + name[len(old) :]] = (field.contents(), field.types[0], sub_type)
            dropped.append(name)
    renamed = {key: value if value[2] is not None else value[:2] for key, value in renamed.items()}
    fields = {**renamed, "general.architecture": (architecture, STRING), **(set_fields or {})}
    fields = {key: value for key, value in fields.items() if key not in drop_fields}
    return rewrite(src, dst, set_fields=fields, drop_fields=tuple(dropped))
