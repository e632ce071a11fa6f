"""The built wheel ships the templates and works from a plain install; README and CI run the same test command."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_templates_and_imports_from_an_install(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)], check=True
    )
    (wheel,) = (tmp_path / "dist").glob("hf_mistral_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    templates = sorted(n for n in names if n.startswith("hf_mistral_kit/chat_templates/") and n.endswith(".jinja"))
    assert templates == sorted(
        f"hf_mistral_kit/chat_templates/{p.name}" for p in (ROOT / "chat_templates").glob("*.jinja")
    )

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    code = "import hf_mistral_kit as k; print(k.__file__); print(k.list_templates())"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    location, listed = out.stdout.splitlines()
    assert location.startswith(str(target))
    assert listed == str(sorted(p.stem for p in (ROOT / "chat_templates").glob("*.jinja")))
    assert {"mistral_v1", "mistral_v3", "mistral_v7", "mistral_tekken_v3", "mistral_tekken_v13"} <= set(eval(listed))


def test_ci_runs_the_readme_test_command_verbatim():
    readme_blocks = (ROOT / "README.md").read_text().split("```bash\n")
    test_command = readme_blocks[2].split("\n")[0]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
