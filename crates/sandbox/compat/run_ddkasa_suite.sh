#!/usr/bin/env bash
# Run toggl-api-wrapper's own integration tests (from its sdist) against the sandbox.
# Usage: run_ddkasa_suite.sh SDIST_DIR VENV [pytest args...]
# Expects the sandbox facts in the environment (source sandbox_env.sh first).
set -u
SDIST="$1"; VENV="$2"; shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$SDIST" || exit 2
mkdir -p logs
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" \
  "$VENV/bin/python" -m pytest -p ddkasa_sandbox_plugin \
  -m integration -o addopts="" -q -rfE "$@"
