#!/usr/bin/env bash
# `make install`: check the toolchain, create/refresh .venv, then fetch the
# Kafka jars and build FerretDB (devstack.install). Every step is skipped when
# its inputs did not change, so this is cheap to run before every `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# --- toolchain -------------------------------------------------------------
missing=()

PY=""
for cand in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    PY="$cand"; break
  fi
done
[ -n "$PY" ] || missing+=("Python 3.11+ (python3 with the venv module; e.g. apt-get install python3 python3-venv)")

java_major=0
if command -v java >/dev/null 2>&1; then
  # 'openjdk version "17.0.15" ...' or 'java version "1.8.0_392"'
  v=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)
  case "$v" in 1.*) java_major=$(echo "$v" | cut -d. -f2) ;; *) java_major=${v%%[.+-]*} ;; esac
fi
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || missing+=("a JDK 17+ with 'java' on PATH (e.g. apt-get install openjdk-17-jdk-headless)")

command -v mvn >/dev/null 2>&1 || missing+=("Apache Maven ('mvn' on PATH, e.g. apt-get install maven)")

go_ok=0
if command -v go >/dev/null 2>&1; then
  gv=$(go env GOVERSION 2>/dev/null | sed 's/^go//')   # e.g. 1.26.8
  gmaj=${gv%%.*}; grest=${gv#*.}; gmin=${grest%%.*}
  if [ "${gmaj:-0}" -gt 1 ] 2>/dev/null || { [ "${gmaj:-0}" -eq 1 ] && [ "${gmin:-0}" -ge 21 ]; } 2>/dev/null; then
    go_ok=1
  fi
fi
[ "$go_ok" = 1 ] || missing+=("Go 1.21+ ('go' on PATH; it fetches the Go 1.24 toolchain FerretDB needs by itself; see https://go.dev/doc/install)")

if [ ${#missing[@]} -gt 0 ]; then
  echo "✗ The local stack needs tools that are not installed:" >&2
  for m in "${missing[@]}"; do echo "    - $m" >&2; done
  echo "  Install them, then run the make target again." >&2
  exit 1
fi

# --- Python virtualenv -----------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "Creating .venv with $("$PY" --version 2>&1)"
  if ! "$PY" -m venv .venv; then
    echo "✗ '$PY -m venv .venv' failed: install the venv module (e.g. apt-get install python3-venv), remove .venv, and retry." >&2
    exit 1
  fi
fi

stamp=.venv/.sandesh-install.sha256
want=$(cat requirements.lock pyproject.toml | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  say "Installing Python packages from requirements.lock into .venv (first run: ~1 min)…"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
else
  say "Python packages up to date (requirements.lock unchanged)"
fi

# --- Kafka jars and FerretDB -----------------------------------------------
exec .venv/bin/python -m devstack.install
