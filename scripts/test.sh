#!/usr/bin/env bash
# The test command: install, lint, type-check, check the state diagrams, run the tests and
# check their branch coverage.
# Any failing step fails the script with that step's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

# Strict editable mode: mypy cannot follow the import hook of a lenient editable install
# (ADR 0001).
"$PYTHON" -m pip install -e '.[dev,libvirt,postgres,crypto]' --config-settings editable_mode=strict
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
"$PYTHON" -m mypy -p vmsnap
"$PYTHON" scripts/draw_state_diagram.py --check

# The tests, with branch coverage ([tool.coverage] in pyproject.toml); the vmsnap processes
# the e2e tests start are measured too.
status=0
"$PYTHON" -m pytest -q --cov=vmsnap --cov-branch --cov-report= || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
if [ "$status" -ne 0 ]; then
    exit "$status"
fi

# Coverage floors: the domain and the projections (the domain/ and projections/ folders;
# coverage records the real files behind the strict editable install's links) at least 95%,
# the whole package at least 85%.
echo "branch coverage of vmsnap.domain and vmsnap.projections (floor 95%):"
"$PYTHON" -m coverage report --include='*/domain/*,*/projections/*' --fail-under=95 || status=$?
echo "branch coverage of the vmsnap package (floor 85%):"
"$PYTHON" -m coverage report --skip-covered --fail-under=85 || status=$?
if [ "$status" -ne 0 ]; then
    echo "error: branch coverage is below its floor" >&2
fi
exit "$status"
