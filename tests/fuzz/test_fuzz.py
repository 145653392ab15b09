"""Coverage-guided fuzzing with a fixed budget, and a replay of the kept corpus.

Each target of fuzz_targets.py runs under atheris (libFuzzer) in a subprocess for its share
of ``FULLDUPLEX_FUZZ_SECONDS`` (60 s in all by default), starting from the seeds and
inputs kept in ``corpus/<target>/``; any crash, unexpected exception, failed property or
memory over 1 GiB fails the test with the input that caused it. Long runs:
``scripts/fuzz <target> -max_total_time=3600``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fuzz_targets as targets
import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
BUDGET = float(os.environ.get("FULLDUPLEX_FUZZ_SECONDS", "60"))
# Starting the interpreter, instrumenting the package and replaying the corpus take
# about five seconds of each target's share on a loaded machine.
PER_TARGET = max(1, int(BUDGET / len(targets.TARGETS)) - 5)


@pytest.mark.parametrize("target", list(targets.TARGETS))
def test_corpus_replays(target: str) -> None:
    """Every kept input still passes its target (no atheris needed, deterministic)."""
    inputs = [p.read_bytes() for p in sorted((CORPUS / target).iterdir())]
    assert inputs, f"no corpus for {target}"
    targets.replay(target, inputs)


@pytest.mark.parametrize("target", list(targets.TARGETS))
def test_fuzz(target: str, tmp_path: Path) -> None:
    """atheris explores from the corpus for PER_TARGET seconds without a finding."""
    work = tmp_path / "corpus"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz.py"),
            target,
            str(work),
            f"-max_total_time={PER_TARGET}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        timeout=PER_TARGET * 4 + 60,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert result.returncode == 0 and not crashes, (crashes, result.stderr[-4000:])
    runs = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    assert runs and int(runs[0].split(":")[-1]) > 0, result.stderr[-2000:]
