"""Tensors read on demand: `LazyTensor`, reading rows straight into a permuted order, and the rotary permutation.

Native checkpoints and GGUF files store `wq`/`wk` with Mistral's interleaved rotary pairs; transformers rotates
halves. The permutation is applied lazily, tensor by tensor, as transformers' loader reads the state dict, and for
tensors stored raw in a file the rows are read straight into their rotate-half places (`read_rows`), so permuting
costs no copy beyond the read.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import NativeCheckpointError


@dataclass(frozen=True)
class LazyTensor:
    """A checkpoint tensor read on demand: `read()` loads `source[index]` (mmap-backed) and applies `transform`.

    It also speaks the protocol transformers' loader uses for safetensors slices in a state dict (`value[...]` to
    materialize, `dtype`, `is_floating_point()`), so a dict of these can be passed as `from_pretrained(state_dict=)`.

    `location` (file, byte offset) is known for tensors stored raw in a file (safetensors). A row permutation
    (`transform` with a `row_order`, e.g. the rotary reordering of `wq`/`wk`) is then applied while reading: the rows
    are read from the file straight into their permuted places, so permuting costs no copy beyond the read itself and
    the source pages are never mapped into the process.
    """

    source: Any  # a safetensors slice, a torch.Tensor, or any object whose `[index]` gives a tensor
    dtype: torch.dtype
    shape: tuple[int, ...]
    index: Any = Ellipsis
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    location: tuple[Path, int] | None = None

    def read(self) -> torch.Tensor:
        row_order = getattr(self.transform, "row_order", None)
        if row_order is not None and self.location is not None and self.index is Ellipsis and _CAN_READ_ROWS:
            return read_rows(*self.location, self.dtype, self.shape, row_order(self.shape[0]))
        tensor = self.source[self.index]
        return self.transform(tensor) if self.transform is not None else tensor

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.read()[index]

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> LazyTensor:
        if self.transform is not None:
            raise ValueError("LazyTensor already has a transform.")
        return LazyTensor(self.source, self.dtype, self.shape, self.index, transform, self.location)

    def sliced(self, index: Any, shape: tuple[int, ...]) -> LazyTensor:
        """The part `index` (of the untransformed tensor) of this tensor, of shape `shape`."""
        if self.index is not Ellipsis or self.transform is not None:
            raise ValueError("Only a plain LazyTensor can be sliced.")
        return LazyTensor(self.source, self.dtype, shape, index)


# preadv scatters one contiguous read of the file into many buffers (the permuted rows) in one system call.
_CAN_READ_ROWS = hasattr(os, "preadv") and sys.byteorder == "little"
_IOV_MAX = (os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 0) or 1024


def read_rows(path: Path, offset: int, dtype: torch.dtype, shape: tuple[int, ...], order: list[int]) -> torch.Tensor:
    """Read the row-major tensor stored raw at `offset` in `path`, source row `r` landing on row `order[r]`."""
    out = torch.empty(shape, dtype=dtype)
    rows = shape[0]
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    destination = out.view(torch.uint8).reshape(rows, row_bytes).numpy()
    buffers = [destination[row] for row in order]
    with open(path, "rb", buffering=0) as stream:
        for start in range(0, rows, _IOV_MAX):
            chunk = buffers[start : start + _IOV_MAX]
            read = os.preadv(stream.fileno(), chunk, offset + start * row_bytes)
            if read != len(chunk) * row_bytes:
                raise NativeCheckpointError(f"{path} ended early (truncated while being read?). Re-download it.")
    return out


def rotary_to_hf(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder `wq`/`wk` rows from Mistral's interleaved rotary pairs to transformers' rotate-half layout."""
    rows, cols = weight.shape
    return weight.reshape(num_heads, rows // num_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_to_native(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of `rotary_to_hf`."""
    rows, cols = weight.shape
    return weight.reshape(num_heads, 2, rows // num_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def rotary_row_order(rows: int, num_heads: int, to: Literal["hf", "native"]) -> list[int]:
    """`order[r]`: the row that source row `r` lands on under `rotary_to_hf` (or `rotary_to_native`)."""
    half = rows // num_heads // 2
    order = []
    for row in range(rows):
        head, within = divmod(row, 2 * half)
        if to == "hf":  # native (pair i, member j) -> hf (half j, position i)
            pair, member = divmod(within, 2)
            order.append(head * 2 * half + member * half + pair)
        else:
            member, pair = divmod(within, half)
            order.append(head * 2 * half + pair * 2 + member)
    return order


@dataclass(frozen=True)
class RotaryToHF:
    num_heads: int

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return rotary_to_hf(weight, self.num_heads)

    def row_order(self, rows: int) -> list[int]:
        return rotary_row_order(rows, self.num_heads, "hf")


@dataclass(frozen=True)
class RotaryToNative:
    num_heads: int

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return rotary_to_native(weight, self.num_heads)

    def row_order(self, rows: int) -> list[int]:
        return rotary_row_order(rows, self.num_heads, "native")


# --- conversion -------------------------------------------------------------------------------------------------


def as_lazy(value: torch.Tensor | LazyTensor) -> LazyTensor:
    """A tensor as a `LazyTensor` (one already lazy as it is)."""
    if isinstance(value, LazyTensor):
        return value
    return LazyTensor(value, value.dtype, tuple(value.shape))


def transposed(weight: torch.Tensor) -> torch.Tensor:
    return weight.t().contiguous()
