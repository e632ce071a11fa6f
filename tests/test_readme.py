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
    env["CUDA_VISIBLE_DEVICES"] = ""  # captured on a CPU: a GPU would change the presets it shows
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


VLLM_RESULTS = ROOT / "benchmarks" / "results" / "vllm_modes.txt"


def test_the_readme_vllm_figures_are_the_benchmarks_output():
    """The vLLM section's table and figures are what `benchmarks/vllm_modes.py` printed (its last run, kept in
    benchmarks/results/: vLLM needs a venv of its own and ten minutes, so CI does not run it)."""
    rows = {}
    for line in VLLM_RESULTS.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[1] in ("default", "mistral"):
            rows[tuple(parts[:3])] = parts[3]
    assert len(rows) == 64
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    # Plain chats exact in both modes; a dict result mangled in the default mode and refused in mistral mode.
    assert all(cell.startswith("equal") for (_, _, form), cell in rows.items() if form == "chat")
    dict_rows = [(mode, cell) for (_, mode, form), cell in rows.items() if form == "result-dict"]
    mangled = re.compile(r"temperature\\+ncondition\\+nhumidity")  # the keys joined by newlines, as printed
    assert all(mangled.search(cell) for mode, cell in dict_rows if mode == "default")
    assert all(
        "raises ValueError: 'str' object has no attribute 'get'" in cell
        for mode, cell in dict_rows
        if mode == "mistral"
    )
    assert "raises `ValueError: 'str' object has no attribute 'get'`" in readme
    # JSON-string results: exact in mistral mode everywhere; in the default mode from v7 on only.
    for (folder, mode, form), cell in rows.items():
        if form == "result-json":
            exact = mode == "mistral" or folder not in ("v3", "tekken-v3")
            assert cell.startswith("equal" if exact else "differ"), (folder, mode, cell)
    assert rows[("v3", "mistral", "result-json")].startswith("equal 165/165")
    assert rows[("v3", "default", "result-json")].startswith("differ at 45 (167 vs 165 ids)")
    assert rows[("tekken-v3", "mistral", "result-json")].startswith("equal 154/154")
    assert "165/165 ids in `mistral` mode, differing at token 45 in the default mode (167 ids)" in readme
    assert "tekken v3: 154/154 in `mistral` mode" in readme
    greedy = [cell.rsplit(maxsplit=1)[-1] for cell in rows.values() if cell.startswith("equal")]
    assert greedy == ["equal"] * 48 and "(48 of 48 rows)" in readme


def test_the_model_table_covers_every_architecture_and_template():
    """issue 21: the README's model table lists each architecture of the kit (`architectures.ARCHITECTURES`) and each
    template (`chat_templates/`) with the models that use them."""
    from hf_mistral_kit import list_templates
    from hf_mistral_kit.architectures import ARCHITECTURES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Models\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]
    architectures = {cell for row in rows for cell in re.findall(r"`([a-z0-9_]+)`", row.split(" | ")[1])}
    templates = {row.split(" | ")[3].strip("`") for row in rows}
    assert {row.model_type for row in ARCHITECTURES} <= architectures
    assert set(list_templates()) <= templates | {"that version's"}
