"""
Small modules with names that say what they hold: every product module stays under 400
lines, so a module that grows past it is split (a guard rail beside ruff's C901).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("domain", "projections", "adapters", "src/vmsnap")
MAX_LINES = 400
MODULES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_product_module_stays_under_400_lines(module: Path) -> None:
    lines = len(module.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{module.relative_to(ROOT)} has {lines} lines: split it"


def test_the_modules_are_found() -> None:
    assert len(MODULES) > 50
