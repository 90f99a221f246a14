#!/usr/bin/env bash
# Packaging smoke test: build the wheel, install it WITHOUT a constraints file into fresh virtualenvs
# at both ends of the supported range, and run .ci/smoke_project.py (startproject + README set-up +
# one request + one record read back through the API) in each.
#
#   low:  Django 4.2 LTS, DRF 3.14 and the floors of drf-spectacular, prometheus-client, PyMySQL,
#         psutil; with the pip the virtualenv comes with
#   high: Django 5.2 and the newest of everything else, with the newest pip; also the README's
#         gunicorn set-up (2 workers, multiprocess metrics)
#
# CI_VENV (default .ci/venv) names the prefix of the virtualenvs: $CI_VENV-smoke-low, -smoke-high.
# SMOKE_TESTS="tests/test_api.py ..." also runs those test files in the low virtualenv (the wheel's
# dependencies + the test extra; pytest imports this checkout, whose code is the wheel's).
# Uses pip's cache; starts no process it does not stop.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON="${PYTHON:-python3}"
PREFIX="${CI_VENV:-.ci/venv}-smoke"
case "$PREFIX" in /*) ;; *) PREFIX="$ROOT/$PREFIX" ;; esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/e2e-otel-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log() { printf '\n== %s\n' "$*"; }

# fresh_venv DIR [upgrade]: the pip a fresh virtualenv comes with (23.2.1 on Python 3.11 is the
# one whose backtracking failed on open OpenTelemetry ranges), or the newest with "upgrade".
fresh_venv() {
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
  if [ "${2:-}" = upgrade ]; then "$1/bin/pip" install -q --upgrade pip; fi
}

log "wheel"
fresh_venv "$PREFIX-build" upgrade
# From a copy of the tracked files: an in-tree build would leave build/ and *.egg-info in the checkout.
mkdir "$WORK/src"
git ls-files -z pyproject.toml README.md e2e_otel | xargs -0 cp --parents -t "$WORK/src"
"$PREFIX-build/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/e2e_otel-*.whl)"
echo "$WHEEL"
if unzip -l "$WHEEL" | grep -E ' tests/| benchmarks/|collector-config/' ; then
  echo "the wheel ships files that are not the package" >&2
  exit 1
fi
rm -rf "$PREFIX-build"

# smoke NAME PIP [--gunicorn] REQUIREMENT...
smoke() {
  local name=$1 pip=$2 gunicorn=""; shift 2
  if [ "${1:-}" = --gunicorn ]; then gunicorn=--gunicorn; shift; set -- "$@" gunicorn; fi
  local venv="$PREFIX-$name"
  log "$name: pip install the wheel $* (no constraints, ${pip} pip)"
  fresh_venv "$venv" "$pip"
  "$venv/bin/pip" install -q "$WHEEL" "$@"
  "$venv/bin/pip" check
  log "$name: startproject + README set-up + one request + one record through the API ${gunicorn:+(+ gunicorn, 2 workers)}"
  (cd "$WORK" && "$venv/bin/python" "$ROOT/.ci/smoke_project.py" $gunicorn "$WORK/$name")
}

smoke low bundled "django==4.2.*" "djangorestframework==3.14.*" "drf-spectacular==0.27.*" \
  "prometheus-client==0.20.*" "pymysql==1.1.*" "psutil==5.9.*"
if [ -n "${SMOKE_TESTS:-}" ]; then
  log "low: ${SMOKE_TESTS} on Django 4.2 / DRF 3.14 (the wheel's dependencies + test extra)"
  "$PREFIX-low/bin/pip" install -q "${WHEEL}[test]"
  # shellcheck disable=SC2086  # SMOKE_TESTS is a list of test files
  "$PREFIX-low/bin/python" -m pytest -q -p no:cacheprovider $SMOKE_TESTS
fi
smoke high upgrade --gunicorn "django==5.2.*"
log "smoke passed"
