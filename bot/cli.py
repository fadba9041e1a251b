"""`breakglass-bot` (also `python -m bot`).

breakglass-bot                 Socket Mode if SLACK_APP_TOKEN is set, else HTTP on $PORT (gunicorn)
breakglass-bot http            HTTP: POST /slack/events, GET /healthz (gunicorn, threaded)
breakglass-bot socket          Socket Mode
breakglass-bot clock           the scheduler alone (when web processes run with BREAKGLASS_SCHEDULER=off)
breakglass-bot check-policy F  validate a policy file and print a summary (--aws: and check the
                               room the permission sets' inline policies leave for denies)
breakglass-bot show-policy     print the policy in effect (--builtin: the built-in example)
breakglass-bot create-table    create the DynamoDB table named by BREAKGLASS_STORE (or --store),
                               the same command as `breakglass-admin create-table`
breakglass-bot try             a local Slack simulation on http://127.0.0.1:$PORT/ (no Slack app needed)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("bot.cli")


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`; the main thread waits for it with `wait_for_signal` (bot/signals.py),
    never `stop.wait()`, which a signal taken by another thread does not wake. Installed before connecting,
    so a signal meanwhile is not lost either."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s received, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _exit_if_late(in_time: bool) -> None:
    """After a shutdown that overran its deadline (bot/shutdown.py, logged), exit now with status 1: the
    interpreter would wait for the threads still stopping (a hung job's worker). What they left undone is
    owed in the store, and taken over by the next process."""
    if not in_time:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _exit_cleanly(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def run_http(threads: int = 32) -> None:
    from gunicorn.app.base import BaseApplication

    from bot import gunicorn_conf
    from bot.runtime import check_configuration

    # Until gunicorn installs its own handlers, SIGTERM (a deploy or supervisor stopping us while the
    # configuration is checked) is a clean stop, not death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = check_configuration()  # in the master, before forking: a bad configuration exits 2 once

    class Server(BaseApplication):
        def load_config(self) -> None:
            config = {
                "bind": f"0.0.0.0:{settings.port}",
                "workers": 1,  # one process: one embedded scheduler; scale with threads or more replicas
                "worker_class": "gthread",
                "threads": threads,
                "backlog": 2048,
                "timeout": 60,
                "graceful_timeout": 20,
                "keepalive": 5,
                "accesslog": None,
                "logconfig_dict": gunicorn_conf.gunicorn_logconfig(settings.log_level),
            }
            for key, value in config.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from bot.wsgi import build_wsgi

            return build_wsgi()

    log.info("serving HTTP on port %s (POST /slack/events, GET /healthz)", settings.port)
    Server().run()


def run_socket() -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError

    from bot.runtime import build, fail
    from bot.shutdown import Shutdown
    from bot.signals import wait_for_signal

    runtime = build()
    if runtime.settings.slack_app_token is None:
        fail(
            "breakglass cannot start:\n  - SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-...)"
        )
    handler = SocketModeHandler(runtime.bolt, runtime.settings.slack_app_token.get_secret_value())
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        handler.connect()
    except SlackApiError as exc:
        runtime.shutdown()
        error = exc.response.get("error") if exc.response is not None else "refused"
        fail(
            f"breakglass cannot start:\n  - SLACK_APP_TOKEN was refused by Slack (apps.connections.open: "
            f"{error}): copy the app-level token (xapp-...) again from Basic Information > App-Level Tokens"
        )
    if runtime.settings.breakglass_scheduler == "embedded":
        runtime.scheduler.start()
    log.info("connected to Slack in Socket Mode")
    wait_for_signal(stop)
    stopping = Shutdown()  # one deadline for the connection and the bot
    stopping.stop("Socket Mode", lambda _left: handler.close())
    runtime.shutdown(stopping=stopping)
    _exit_if_late(stopping.finish())


def run_clock() -> None:
    from bot.config import ConfigError, load_settings
    from bot.runtime import build, fail
    from bot.signals import wait_for_signal

    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(exc.render())
    runtime = build(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    runtime.scheduler.start()
    log.info("scheduler running (warnings, expiry, outbox)")
    wait_for_signal(stop)
    _exit_if_late(runtime.shutdown())


def run_try(port: int | None, db_path: str | None, policy_path: str | None = None) -> int:
    from bot.localslack.workspace import serve
    from bot.logs import configure_logging
    from bot.policy import PolicyError, load_policy

    configure_logging("WARNING")
    try:
        policy = load_policy(policy_path) if policy_path is not None else None
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        in_time = serve(port if port is not None else int(os.environ.get("PORT") or 3000), db_path, policy)
    except OSError as exc:  # e.g. the port is taken (the message names PORT=)
        print(f"breakglass try: {exc}", file=sys.stderr)
        return 2
    _exit_if_late(in_time)
    return 0


def check_policy(path: str, aws: bool = False) -> int:
    from bot.policy import PolicyError, load_policy, summarize

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(summarize(policy))
    if aws and policy.access.provider == "identity-center" and policy.access.instance_arn:
        from bot.access.room import room_warnings

        sets = [p.aws.permission_set for p in policy.profiles.values() if p.aws is not None]
        for warning in room_warnings(policy.access.instance_arn, sets):
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def show_policy(builtin: bool) -> int:
    """Print the policy in effect (BREAKGLASS_POLICY, else the built-in one), or with --builtin the
    built-in example, as YAML to copy and edit."""
    from bot.config import Settings
    from bot.policy import DEFAULT_POLICY_YAML

    path = None if builtin else Settings(_env_file=".env").breakglass_policy
    if path is None:
        print(DEFAULT_POLICY_YAML, end="")
        return 0
    try:
        print(path.read_text(encoding="utf-8-sig"), end="")
    except OSError as exc:
        print(f"BREAKGLASS_POLICY: cannot read {str(path)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def create_table(store_url: str | None) -> int:
    """The same command as `breakglass-admin create-table` (one implementation)."""
    from bot import admin
    from bot.config import Settings

    url = store_url or Settings(_env_file=".env").breakglass_store
    return admin.main(["create-table", "--store", url])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="breakglass-bot", description="Break-glass access via Slack.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="Socket Mode if SLACK_APP_TOKEN is set, else HTTP (default)")
    http = sub.add_parser("http", help="serve HTTP on $PORT with gunicorn")
    http.add_argument("--threads", type=int, default=32)
    sub.add_parser("socket", help="connect with Socket Mode")
    sub.add_parser("clock", help="run only the scheduler")
    check = sub.add_parser("check-policy", help="validate a policy file")
    check.add_argument("file")
    check.add_argument(
        "--aws",
        action="store_true",
        help="also read each permission set's inline policy (AWS environment) and warn when it leaves "
        "too little room for the denies that end revoked sessions",
    )
    show = sub.add_parser("show-policy", help="print the policy in effect (--builtin: the built-in one)")
    show.add_argument("--builtin", action="store_true", help="print the built-in policy")
    table = sub.add_parser("create-table", help="create the DynamoDB table (idempotent)")
    table.add_argument("--store", help="store URL (default: BREAKGLASS_STORE)")
    trial = sub.add_parser("try", help="try it in a browser: a local Slack simulation (no Slack app needed)")
    trial.add_argument(
        "--port", type=int, default=None, help="page port on 127.0.0.1 (default: $PORT or 3000)"
    )
    trial.add_argument(
        "--db",
        default=None,
        help="SQLite file to keep the simulation's events in (default: a temporary file, gone on exit; "
        "the simulated Slack messages are never kept)",
    )
    trial.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="preview your own policy file: its profiles, durations and limits, with the simulation's "
        "example people in the roles (default: the built-in example policy)",
    )
    args = parser.parse_args(argv)

    command = args.command or "run"
    if command == "try":
        return run_try(args.port, args.db, args.policy)
    if command == "check-policy":
        return check_policy(args.file, aws=args.aws)
    if command == "show-policy":
        return show_policy(args.builtin)
    if command == "create-table":
        return create_table(args.store)
    if command == "clock":
        run_clock()
        return 0
    if command == "socket":
        run_socket()
        return 0
    if command == "http":
        run_http(args.threads)
        return 0
    from bot.config import ConfigError, load_settings
    from bot.runtime import fail

    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(exc.render())
    if settings.socket_mode:
        run_socket()
    else:
        run_http()
    return 0


if __name__ == "__main__":
    sys.exit(main())
