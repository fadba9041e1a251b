"""A local Slack workspace: a Slack Web API served over real HTTP (``webapi``), used by the test suite and by
``breakglass-bot try``."""
