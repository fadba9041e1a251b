"""Block Kit built as plain dicts on the hot path (App Home, re-published after every delivery) is still
checked with slack_sdk's models here: what the bot builds at run time without them, the tests validate."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bench.common import event
from bot import blocks, ids
from bot.localslack.webapi import validate_blocks, validate_view
from store import BreakGlassEvent

NOW = datetime.now(UTC).replace(microsecond=0)
ACTIVE = event(invoker="U0001", profile="prod<&>", created_at=NOW, incident="INC-<1>&")
ENDED = [
    event(invoker="U0001", profile="sandbox", created_at=NOW - timedelta(hours=i + 1), ended=True)
    for i in range(10)
]
MANY = [event(invoker=f"U{i:04d}", profile="prod", created_at=NOW - timedelta(minutes=i)) for i in range(120)]


def home(active: list[BreakGlassEvent], recent: list[BreakGlassEvent], everyone: list | None, queue: list | None,
         can_review: bool) -> dict:  # fmt: skip
    return blocks.home(
        mine_active=active, mine_recent=recent, all_active=everyone, unreviewed=queue, can_review=can_review
    )


def test_app_home_passes_slack_sdk_validation_for_every_shape() -> None:
    shapes = itertools.product(
        [[], [ACTIVE], MANY[:3]], [[], ENDED], [None, [], MANY], [None, [], ENDED, MANY], [True, False]
    )
    for active, recent, everyone, queue, can_review in shapes:
        view = home(active, recent, everyone, queue, can_review)
        assert validate_view(view) == [], (len(active), everyone, queue)
        assert len(view["blocks"]) <= 100
        # slack_sdk parses it back into the same view: nothing it would drop or rename
        assert View(**view).to_dict() == view


def test_app_home_shows_buttons_only_where_the_reader_may_act() -> None:
    view = home([ACTIVE], ENDED, None, ENDED[:2], can_review=False)
    accessories = [b["accessory"]["action_id"] for b in view["blocks"] if "accessory" in b]
    assert accessories == [ids.ACTION_CLOSE]  # the user's own active event; no review buttons
    view = home([], [], MANY[:2], ENDED[:1], can_review=True)
    accessories = [b["accessory"]["action_id"] for b in view["blocks"] if "accessory" in b]
    assert accessories == [ids.ACTION_CLOSE, ids.ACTION_CLOSE, ids.ACTION_REVIEW]
    assert "prod&lt;&amp;&gt;" in str(home([ACTIVE], [], None, None, False))  # escaped as everywhere else


def test_messages_built_as_dicts_are_what_slack_sdk_would_send() -> None:
    closed = ACTIVE.close(by="U0SEC", reason="done <!channel> & more", now=NOW + timedelta(minutes=5))
    bodies = [
        blocks.dm_invoked(ACTIVE)[1],
        blocks.dm_warning(ACTIVE, timedelta(minutes=5))[1],
        blocks.dm_closed(closed)[1],
        blocks.thread_closed(closed)[1],
        blocks.thread_expired(ACTIVE)[1],
        blocks.message("x" * 5000)[1],  # truncated to a section's 3000 characters
        blocks.event_list("Active", MANY, "none")[1],
    ]
    for body in bodies:
        assert validate_blocks(body) == []
        assert [Block.parse(b).to_dict() for b in body] == body
    assert len(blocks.message("x" * 5000)[1][0]["text"]["text"]) == blocks.MAX_SECTION


def test_the_notice_modal_is_what_slack_sdk_would_send() -> None:
    for title, text in (
        ("Access granted", blocks.granted(ACTIVE)),
        ("A title longer than Slack allows", "x" * 4000),
    ):
        view = blocks.notice_modal(title, text)
        assert validate_view(view) == []
        assert View(**view).to_dict() == view
        assert len(view["title"]["text"]) == 24 or title == "Access granted"
