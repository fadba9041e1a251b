"""The delivery core: everything owed after a stored change, delivered by one engine (README, "Architecture").

* `engine`: claim, re-read, send, record, backoff, the sweep's `deliver_owed`, named tasks (`Pipeline`);
* `registry`: `OutboxKind -> Step` (a handler and how it is sent), checked complete;
* `handlers`: the handlers by subject (announcements, access, evidence, extend, incidents, drift);
* `deps`: `DeliveryDeps`, all a handler may use (never the engine);
* `lease`: heartbeat leases, their keeper, new events' leases; `queue`: the post-ack queue; `inflight`;
* `audit_channels`: broken audit channels; `fallback`: owing the audit fallback;
* `retry`: slack_sdk's retry handlers bounded by the delivery's lease; `errors`: what a step raises.
"""
