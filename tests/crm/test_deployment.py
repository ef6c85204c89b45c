"""The production posture: Django's deployment checklist passes with production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The browser tests allow the ORM under Playwright's loop for this process only.
    base = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_passes_with_production_settings(tmp_path: Path) -> None:
    result = _check(
        {
            "SECURE": "1",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(60),
            "ALLOWED_HOSTS": "crm.example.com",
            "CRM_BASE_URL": "https://crm.example.com",
            "CRM_VAR_DIR": str(tmp_path),
        }
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_first_run_setup_served_in_the_clear(tmp_path: Path) -> None:
    result = _check({"SECURE": "0", "DEBUG": "0", "CRM_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stdout + result.stderr


def test_a_malformed_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    result = _check({"CONN_MAX_AGE": "soon", "CRM_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "CONN_MAX_AGE" in result.stderr
