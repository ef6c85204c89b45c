#!/usr/bin/env bash
# First run on the embedded default: SQLite, local files, in-process tasks.
# Creates the environment, migrates, loads the demo data, converts the sample mailbox into
# tickets, starts the server on 127.0.0.1:8000 and prints the demo logins.
source "$(dirname "$0")/common.sh"
ensure_venv dev
export DEBUG=${DEBUG:-0}
export CRM_BASE_URL=${CRM_BASE_URL:-http://127.0.0.1:8000}
mkdir -p var
# A demo vendor key pair, so that the connector's license can be issued and activated here.
if [ ! -f var/demo-vendor.pem ]; then
    .venv/bin/python manage.py license_keygen --private-key var/demo-vendor.pem \
        --public-key var/demo-vendor.pub >/dev/null
fi
export LICENSE_PUBLIC_KEY=${LICENSE_PUBLIC_KEY:-$(cat var/demo-vendor.pub)}
echo "== Preparing the database (var/crm.sqlite3)"
.venv/bin/python manage.py migrate --no-input -v0
.venv/bin/python manage.py collectstatic --no-input -v0
.venv/bin/python manage.py load_demo
echo "== Converting the sample mailbox (fixtures/sample_mailbox) into tickets"
.venv/bin/python manage.py mailconverter_demo
if [ ! -f var/demo-license.key ]; then
    echo "== Activating a demo license for the Outlook Mail Connector"
    .venv/bin/python manage.py license_issue --private-key var/demo-vendor.pem \
        --installation "Demo" --crm-url "$CRM_BASE_URL" --users 10 | tail -n 1 > var/demo-license.key
    .venv/bin/python manage.py license_activate --file var/demo-license.key
    .venv/bin/python manage.py license_enable --all-active
fi
echo
echo "== The CRM is at http://127.0.0.1:8000/  (administration: /admin/). Ctrl-C stops it."
# One process: without Redis the privilege cache lives in the process (see README).
exec .venv/bin/gunicorn crm.wsgi --bind 127.0.0.1:8000 --workers 1 --threads 8 \
    --access-logfile - --log-level warning
