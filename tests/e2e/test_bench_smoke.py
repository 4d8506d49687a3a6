"""``bench/run.py`` runs and writes its document (a smoke run: no time is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "bench" / "run.py")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("load", ["| 2. Aggregate load", "## 2. Aggregate load"]),
        (
            "freeze",
            [
                "| 7. Freeze window",
                "## 7. The freeze window",
                "| pools | sequential (limit 1) ms |",
            ],
        ),
    ],
)
def test_a_quick_run_of_one_benchmark_writes_the_header_summary_and_section(
    tmp_path: Path, name: str, expected: list[str]
) -> None:
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [*RUN, "--quick", "--only", name, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    doc = out.read_text(encoding="utf-8")
    assert "- CPU: " in doc and "- Packages: vmsnap" in doc
    for text in expected:
        assert text in doc


def test_an_unknown_benchmark_name_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*RUN, "--only", "nope", "--out", str(tmp_path / "x.md")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "no such benchmark: bench_nope" in done.stderr
    assert not (tmp_path / "x.md").exists()
