"""The delivery core (being split out of `bot/pipeline.py`): so far the heartbeat leases (`lease`)."""
