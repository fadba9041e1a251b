"""Read by a plain `gunicorn bot.wsgi:app` started in this directory (gunicorn's default config file):
the configuration is checked before workers are forked and gunicorn logs JSON. See bot/gunicorn_conf.py."""

from bot.gunicorn_conf import child_exit, logconfig_dict, on_exit, on_starting

__all__ = ["child_exit", "logconfig_dict", "on_exit", "on_starting"]
