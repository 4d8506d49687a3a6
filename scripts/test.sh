#!/usr/bin/env bash
# The test command: install, lint, type-check, check the state diagrams, run the tests.
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

status=0
"$PYTHON" -m pytest -q || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$status"
