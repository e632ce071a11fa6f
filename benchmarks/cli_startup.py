"""Start-up time of `hf-mistral-kit --help` and `render`, as ratios to `python -c "import transformers"`.

Runs the three commands in alternating order (one round = one run of each, the order rotated every round) in fresh
processes, so that a busy machine slows all three alike, and prints each command's median wall time and its ratio to
the baseline's median. The load average before and after says how busy the machine was.

    python benchmarks/cli_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")


def commands(conversation: Path) -> dict[str, list[str]]:
    return {
        'python -c "import transformers"': [sys.executable, "-c", "import transformers"],
        "hf-mistral-kit --help": [str(SCRIPT), "--help"],
        "hf-mistral-kit render (1 message)": [str(SCRIPT), "render", str(conversation)],
    }


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        conversation = Path(directory, "chat.json")
        conversation.write_text(json.dumps([{"role": "user", "content": "Hello"}]), encoding="utf-8")
        runs = commands(conversation)
        names = list(runs)
        for name in names:  # warm the page cache and the .pyc files once
            wall(runs[name])
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_number in range(args.rounds):
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                times[name].append(wall(runs[name]))
        load_after = os.getloadavg()
    baseline = statistics.median(times[names[0]])
    print(
        f"{args.rounds} alternating rounds on {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after"
    )
    for name in names:
        median = statistics.median(times[name])
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"{name:36} median {median:5.2f} s (range {spread} s)  ratio {median / baseline:4.2f}")


if __name__ == "__main__":
    main()
