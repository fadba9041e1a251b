"""gunicorn configuration: `gunicorn -c python:bot.gunicorn_conf bot.wsgi:app` (the Procfile; also used by
`breakglass-bot http`).

* The configuration (settings, policy, store) is checked in the master before any worker is forked: an
  error prints every problem once and gunicorn exits with status 2, instead of restarting workers forever.
* gunicorn's own log lines go through the bot's JSON formatter (one object per line).
"""

from __future__ import annotations

import os
from typing import Any

from bot.logs import gunicorn_logconfig

logconfig_dict = gunicorn_logconfig((os.environ.get("LOG_LEVEL") or "INFO").upper())


def on_starting(server: Any) -> None:
    from bot.runtime import check_configuration

    check_configuration()
