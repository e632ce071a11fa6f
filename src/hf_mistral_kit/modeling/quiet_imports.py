"""Importing bitsandbytes without the warning it logs about an optional kernel, which the user did not cause.

On a CPU with AVX512-BF16, `import bitsandbytes` (0.49+) asks the Hugging Face kernel hub for an optional faster CPU
matmul (bitsandbytes/backends/cpu/ops.py, on CUDA machines too) and logs a WARNING when it cannot have it: without the
`kernels` package, without network ("could not verify publisher trust status"), or offline and not cached.
bitsandbytes then uses its built-in kernel, so nothing is wrong, and bitsandbytes has no switch to skip the lookup.
When the kit is the first to import bitsandbytes (a quantized `from_pretrained` through the kit's Auto classes,
`load_model`, `lora_config`), these records become INFO notes of this module's logger; every other record passes.
A program that imports bitsandbytes (or peft, trl) itself before that still gets the warning: it comes at import.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["import_bitsandbytes"]

logger = logging.getLogger(__name__)

# logger -> the start of its message about the optional kernel.
_OPTIONAL_KERNEL_RECORDS = {
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    "kernels._internals.hf_hub": "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
}


def import_bitsandbytes() -> None:
    """Import bitsandbytes (if installed and not imported yet) with its optional-kernel warning turned into an INFO
    note. Later imports, by transformers or peft, find it imported and say nothing."""
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    with _optional_kernel_notes():
        import bitsandbytes  # noqa: F401


class _OptionalKernelNote(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not record.getMessage().startswith(self.start):
            return True
        logger.info("bitsandbytes' optional CPU kernel: %s", record.getMessage())
        return False


@contextmanager
def _optional_kernel_notes() -> Iterator[None]:
    filters = [(logging.getLogger(name), _OptionalKernelNote(text)) for name, text in _OPTIONAL_KERNEL_RECORDS.items()]
    for source, note in filters:
        source.addFilter(note)
    try:
        yield
    finally:
        for source, note in filters:
            source.removeFilter(note)
