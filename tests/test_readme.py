"""The README's transcripts are what the commands print now (issue 20: a captured demo showed 3 templates of 8).

A transcript is a ```text block whose first line is `$ hf-mistral-kit ...`: the command, then what it prints (stdout,
then stderr without progress bars), and, when the command ends with `; echo "exit code $?"`, its exit code last.
Compared by shape: numbers, timings, the machine's name and the tiny models' random replies differ from run to run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from reference_configs import MIXTRAL_8X7B

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")
TRANSCRIPT = re.compile(r"^```text\n\$ (hf-mistral-kit .*?)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXIT_CODE = '; echo "exit code $?"'


def transcripts() -> list[tuple[str, str]]:
    return TRANSCRIPT.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def shape(text: str) -> list[str]:
    """`text` without what differs between runs and machines: numbers, the CPU's name, the random reply text (the line
    after "streamed:"), column widths."""
    lines, previous = [], ""
    for line in text.splitlines():
        if previous.endswith("streamed:"):
            line = "<random reply>"
        previous = line
        line = re.sub(r"\b(on|of) [^(]+ \((no CUDA GPU|compute capability)", r"\1 <machine> (\2", line)
        line = re.sub(r"[0-9]+(\.[0-9]+)?", "0", line)
        lines.append(" ".join(line.split()))
    return lines


@pytest.fixture
def readme_dir(tmp_path):
    """What the README's commands refer to: the Mixtral 8x7B config, as downloaded."""
    (tmp_path / "Mixtral-8x7B-Instruct-v0.1").mkdir()
    (tmp_path / "Mixtral-8x7B-Instruct-v0.1" / "config.json").write_text(json.dumps(MIXTRAL_8X7B, indent=2))
    return tmp_path


def test_the_readme_has_the_transcripts_it_promises():
    commands = [command for command, _ in transcripts()]
    assert "hf-mistral-kit demo" in commands
    assert any(command.startswith("hf-mistral-kit plan ") and command.endswith(EXIT_CODE) for command in commands)


@pytest.mark.parametrize("command, printed", transcripts(), ids=lambda value: value.split("\n")[0][:40])
def test_a_readme_transcript_is_what_the_command_prints_now(cli_env, readme_dir, command, printed):
    expected_code = 0
    if command.endswith(EXIT_CODE):
        command = command.removesuffix(EXIT_CODE)
        *rest, last = printed.rstrip("\n").split("\n")
        expected_code = int(last.removeprefix("exit code "))
        printed = "\n".join(rest) + "\n"
    home = readme_dir / "home"  # an empty cache in ~/.cache/hf-mistral-kit: the demo's first run, as captured
    env = {key: value for key, value in cli_env.items() if key not in ("HF_MISTRAL_KIT_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [str(SCRIPT), *shlex.split(command)[1:]],
        cwd=readme_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stderr = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert result.returncode == expected_code, result.stderr
    assert shape(result.stdout + "".join(line + "\n" for line in stderr)) == shape(printed)
