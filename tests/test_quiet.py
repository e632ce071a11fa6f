"""issue 20: library warnings the user did not cause become notes once `hf_mistral_kit` is imported (`quiet`)."""

from __future__ import annotations

import subprocess
import sys

from hf_mistral_kit.quiet import OPTIONAL_KERNEL_RECORDS

LOG_AFTER_IMPORT = """
import logging, sys
import hf_mistral_kit
notes = []
handler = logging.Handler()
handler.emit = notes.append
logging.getLogger("hf_mistral_kit.quiet").addHandler(handler)
logging.getLogger("hf_mistral_kit.quiet").setLevel(logging.INFO)
for name, start in {records!r}.items():
    logging.getLogger(name).warning(start + ": could not verify publisher trust status")
    logging.getLogger(name).warning("something else")
print([(note.levelname, note.getMessage()[:40]) for note in notes])
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_optional_kernel_warnings_are_notes_and_nothing_else_is():
    # Logged directly, so that this holds on every CPU (bitsandbytes asks the kernel hub only on AVX512-BF16 ones).
    result = run(LOG_AFTER_IMPORT.format(records=OPTIONAL_KERNEL_RECORDS))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["something else", "something else"]  # other records pass untouched
    assert result.stdout.strip() == repr(
        [("INFO", "bitsandbytes' optional CPU kernel: Faile"), ("INFO", "bitsandbytes' optional CPU kernel: Skipp")]
    )


def test_peft_imported_after_the_kit_is_quiet():
    # peft imports bitsandbytes, which (on a CPU with AVX512-BF16, like CI's) asks the kernel hub and warns.
    result = run("import hf_mistral_kit, peft, bitsandbytes")
    assert result.returncode == 0 and result.stderr == "", result.stderr
