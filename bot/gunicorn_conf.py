"""gunicorn configuration: `gunicorn -c python:bot.gunicorn_conf bot.wsgi:app` (the Procfile; also used by
`breakglass-bot http`).

* The configuration (settings, policy, store) is checked in the master before any worker is forked: an
  error prints every problem once and gunicorn exits with status 2, instead of restarting workers forever.
* gunicorn's own log lines go through the bot's JSON formatter (one object per line).
* `GET /metrics` adds up every worker's counts: prometheus-client's multiprocess mode, in a fresh directory
  made in the master (PROMETHEUS_MULTIPROC_DIR, unless already set) before a worker imports prometheus-client.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from bot.logs import gunicorn_logconfig

logconfig_dict = gunicorn_logconfig((os.environ.get("LOG_LEVEL") or "INFO").upper())

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # bot.metrics.MULTIPROC_ENV
_metrics_dir: str | None = None  # made by on_starting, removed by on_exit


def share_metrics_between_workers() -> None:
    global _metrics_dir
    if not os.environ.get(MULTIPROC_ENV):
        _metrics_dir = tempfile.mkdtemp(prefix="breakglass-metrics-")
        os.environ[MULTIPROC_ENV] = _metrics_dir


def child_exit(server: Any, worker: Any) -> None:
    from bot.metrics import worker_exited

    worker_exited(worker.pid)


def on_exit(server: Any) -> None:
    if _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def on_starting(server: Any) -> None:
    from bot.runtime import check_configuration

    share_metrics_between_workers()
    check_configuration()
