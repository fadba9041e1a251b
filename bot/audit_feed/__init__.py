"""The audit feed outside Slack: OCSF records per step of a break-glass event (bot/audit_feed/ocsf.py)."""

from bot.audit_feed.ocsf import OCSF_VERSION, Step, chain_digest, event_records, steps_of

__all__ = ["OCSF_VERSION", "Step", "chain_digest", "event_records", "steps_of"]
