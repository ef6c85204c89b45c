#!/usr/bin/env bash
# Sets up and runs every test against the real services: PostgreSQL, Redis, Chromium.
# Installs what is missing (Debian packages, Python dependencies) and starts the services on
# loopback. Extra arguments go to pytest.
source "$(dirname "$0")/common.sh"

apt_install postgresql redis-server chromium dovecot-imapd nodejs

start_postgres() {
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    echo "== Starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 1; done
    echo "PostgreSQL did not start" >&2
    exit 1
}

start_redis() {
    redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return
    echo "== Starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 1; done
    echo "Redis did not start" >&2
    exit 1
}

start_postgres
start_redis
ensure_venv dev

# Tests connect as the postgres superuser over loopback; pytest-django makes test_crm itself.
export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/crm}
export CRM_VAR_DIR=${CRM_VAR_DIR:-$ROOT/var/test}

echo "== Static checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy crm licensing mailconnector mailconverter
.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null \
    || { echo "Migrations are missing: run manage.py makemigrations" >&2; exit 1; }

run_pytest() {
    local rc=0
    .venv/bin/python -m pytest "$@" || rc=$?
    # Exit 5 means no test was collected: a broken selection, never a pass.
    if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; return 1; fi
    return "$rc"
}

echo "== The add-in's task pane logic (node's test runner)"
node --test mailconnector/addin/tests/*.test.mjs

echo "== Tests on PostgreSQL"
run_pytest "$@"

echo "== The embedded default (SQLite): the records services, the add-in's records and suggestions"
DATABASE_URL="sqlite:///$CRM_VAR_DIR/embedded.sqlite3" run_pytest -q -p no:cacheprovider \
    tests/crm/services/test_records.py tests/mailconnector/test_api_records.py \
    tests/mailconnector/test_authorization_matrix.py
