"""Block, action and callback ids: a public contract (documented in README.md). Never rename."""

COMMAND = "/breakglass"
# `/breakglass <subcommand>`: a profile may not be named like one (the command could not reach it).
SUBCOMMANDS = ("help", "list", "status", "close", "extend", "history", "review")

# Modals (callback_id)
CALLBACK_INVOKE = "breakglass_invoke"
CALLBACK_CLOSE = "breakglass_close"
CALLBACK_REVIEW = "breakglass_review"
CALLBACK_EXTEND = "breakglass_extend"

# Invoke modal input blocks: each block_id equals its element's action_id.
PROFILE = "profile"
REASON = "reason"
JUSTIFICATION = "justification"
DURATION = "duration"
INCIDENT = "incident"
INVOKE_FIELDS = (PROFILE, REASON, JUSTIFICATION, DURATION, INCIDENT)
# The invoke form given back after a refusal decided after its ack (bot.slack.refused_form): the error of
# a field, in a context block right below it (views.update cannot set an input's error).
FIELD_ERRORS = {
    PROFILE: "profile_error",
    REASON: "reason_error",
    JUSTIFICATION: "justification_error",
    DURATION: "duration_error",
    INCIDENT: "incident_error",
}

# Close / review modals
CLOSE_REASON = "close_reason"
REVIEW_NOTES = "review_notes"

# Extend modal (block_id = action_id)
EXTEND_DURATION = "extend_duration"
EXTEND_REASON = "extend_reason"

# Buttons (action_id); value = the 16-hex event id
ACTION_CLOSE = "close_event"
ACTION_REVIEW = "review_event"
ACTION_EXTEND = "extend_event"  # expiry-warning DM and App Home
ACTION_OPEN_MODAL = "open_breakglass"  # App Home "Break glass" button

# Block ids of messages (stable, so updates replace the same blocks)
BLOCK_EVENT_ACTIONS = "event_actions"
