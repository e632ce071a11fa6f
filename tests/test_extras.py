"""issue 10: the extras pyproject declares ask for the versions the kit accepts at run time, and the README's install
line installs what its own snippets need."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

from hf_mistral_kit.planning.hardware import BITSANDBYTES_MIN_VERSION, FLASH_ATTN_MIN_VERSION

ROOT = Path(__file__).resolve().parents[1]


def minimums(package: str) -> set[Version]:
    """Every `package>=X` pyproject.toml asks for (in any extra)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return {Version(v) for v in re.findall(rf'"{re.escape(package)}>=([0-9.]+)', text)}


def test_pyproject_minimums_are_the_runtime_minimums():
    assert minimums("bitsandbytes") == {BITSANDBYTES_MIN_VERSION}
    assert minimums("flash-attn") == {FLASH_ATTN_MIN_VERSION}


def test_the_readme_install_line_has_the_extras_its_snippets_use():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme.split("```bash\n", 1)[1].splitlines()[0]
    extras = set(re.search(r'-e "\.\[([\w,]+)\]"', install).group(1).split(","))
    snippets = "".join(re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL))
    needed = set()
    if re.search(r'preset="(4bit|8bit)"', snippets):
        needed.add("bnb")
    if "prepare_for_training=True" in snippets:
        needed.add("peft")
    assert needed == {"bnb", "peft"}  # what the README's snippets use today
    assert needed <= extras
