#!/usr/bin/env bash
# First run on the embedded default: SQLite, local files, in-process tasks.
# Creates the environment, migrates, loads the demo data, starts the server on 127.0.0.1:8000
# and prints the demo logins.
source "$(dirname "$0")/common.sh"
ensure_venv dev
export DEBUG=${DEBUG:-0}
echo "== Preparing the database (var/crm.sqlite3)"
.venv/bin/python manage.py migrate --no-input -v0
.venv/bin/python manage.py collectstatic --no-input -v0
.venv/bin/python manage.py load_demo
echo
echo "== The CRM is at http://127.0.0.1:8000/  (administration: /admin/). Ctrl-C stops it."
# One process: without Redis the privilege cache lives in the process (see README).
exec .venv/bin/gunicorn crm.wsgi --bind 127.0.0.1:8000 --workers 1 --threads 8 \
    --access-logfile - --log-level warning
