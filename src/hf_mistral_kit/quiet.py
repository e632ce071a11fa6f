"""Warnings the user did not cause, from libraries the kit uses, turned into notes when `hf_mistral_kit` is imported.

- bitsandbytes' optional CPU kernel. On a CPU with AVX512-BF16, `import bitsandbytes` (0.49+) asks the Hugging Face
  kernel hub for an optional faster CPU matmul (bitsandbytes/backends/cpu/ops.py, on CUDA machines too; bitsandbytes
  has no switch to skip it) and logs a WARNING when it cannot have it: without the `kernels` package, without network
  ("could not verify publisher trust status"), or offline and not cached. bitsandbytes then uses its built-in kernel,
  so nothing is wrong. Those two records (and only those) become INFO notes of this module's logger, whoever imports
  bitsandbytes after the kit: a quantized load, peft, TRL. A program that imports bitsandbytes, peft or TRL before
  `hf_mistral_kit` still gets the warning: it is logged at import, before the kit exists.
- tqdm in a notebook. In a Jupyter kernel without ipywidgets, the first `import tqdm.auto` warns "TqdmWarning:
  IProgress not found" and falls back to text progress bars; transformers imports it when imported
  (transformers/utils/logging.py), which every heavy kit module does on the user's behalf. There, the kit imports it
  first with that one warning off: the same text bars; with ipywidgets installed nothing changes.

Standard library only: `import hf_mistral_kit` stays light.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings

__all__ = ["install"]

logger = logging.getLogger(__name__)

# logger -> the start of its message about bitsandbytes' optional kernel.
OPTIONAL_KERNEL_RECORDS = {
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    "kernels._internals.hf_hub": "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
}


class OptionalKernelNote(logging.Filter):
    """Turns a WARNING whose message starts with `start` into an INFO note of this module's logger."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not record.getMessage().startswith(self.start):
            return True
        logger.info("bitsandbytes' optional CPU kernel: %s", record.getMessage())
        return False


def install() -> None:
    """Put the notes in place (once per process)."""
    for name, start in OPTIONAL_KERNEL_RECORDS.items():
        source = logging.getLogger(name)
        if not any(isinstance(existing, OptionalKernelNote) for existing in source.filters):
            source.addFilter(OptionalKernelNote(start))
    if "IPython" in sys.modules and "tqdm.auto" not in sys.modules and importlib.util.find_spec("tqdm") is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            import tqdm.auto  # noqa: F401
