"""`breakglass-bot try` in a real headless browser (Debian's chromium + chromedriver, driven by selenium).

The page talks only to the local workspace, which sends signed Slack requests to the bot's real HTTP endpoint;
what the page shows is what the bot sent to the local Slack Web API. `make test` installs the browser first
(scripts/install-browser). Set BREAKGLASS_SCREENSHOTS=DIR to save the screenshots shown in the README.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.localslack.workspace import AUDIT_CHANNEL, LocalWorkspace
from tests.outside import missing

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    # `make test` installs the browser (scripts/install-browser): under CI a missing one is a broken setup.
    missing(
        "no chromium/chromedriver on this machine: `make test` installs them with scripts/install-browser "
        "(apt-get, as root); install Debian's chromium and chromium-driver to run the browser tests",
        module=True,
    )

from selenium import webdriver  # noqa: E402 - only once a browser exists
from selenium.common.exceptions import (  # noqa: E402
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

JUSTIFICATION = "Database failover is stuck; promoting the replica by hand"
SHOTS = os.environ.get("BREAKGLASS_SCREENSHOTS")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[LocalWorkspace]:
    with LocalWorkspace(port=0, db_path=str(tmp_path / "try.db")) as ws:
        yield ws


def start_chrome(options: webdriver.ChromeOptions, attempts: int = 3) -> WebDriver:
    """Start chromedriver, again if it lost the race for its port.

    selenium picks a free port and then starts chromedriver on it; another process (a parallel test worker)
    can bind that port in between, and chromedriver exits with status 1 ("bind() failed: Address already in
    use"). Only that start-up exit is retried, with a fresh port each time; anything else fails the test.
    """
    for attempt in range(1, attempts + 1):
        service = Service(CHROMEDRIVER)
        try:
            return webdriver.Chrome(service=service, options=options)
        except WebDriverException as error:
            if "unexpectedly exited" not in str(error) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(arg)
    driver = start_chrome(options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, found: Callable[[WebDriver], Any], timeout: float = 15) -> Any:
    """Until ``found`` returns something truthy; an element re-rendered meanwhile (the page polls) is retried."""
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(found)


def shot(driver: WebDriver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def click(driver: WebDriver, find: Callable[[WebDriver], WebElement]) -> None:
    """Click what ``find`` returns, again if the page re-rendered it meanwhile (it polls every second)."""

    def clicked(d: WebDriver) -> bool:
        try:
            find(d).click()
        except (StaleElementReferenceException, NoSuchElementException, ElementNotInteractableException):
            return False
        return True

    wait(driver, clicked)


def be(driver: WebDriver, user: str) -> None:
    Select(driver.find_element(By.ID, "who")).select_by_value(user)


def open_pane(driver: WebDriver, pane_id: str) -> None:
    click(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-pane="{pane_id}"]'))


def click_in_message(driver: WebDriver, marker: str, action_id: str) -> None:
    click(
        driver,
        lambda d: audit_message(d, marker).find_element(By.CSS_SELECTOR, f'[data-action-id="{action_id}"]'),
    )


def type_command(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def modal(driver: WebDriver, title: str) -> WebElement:
    def found(d: WebDriver) -> WebElement | bool:
        for element in d.find_elements(By.CSS_SELECTOR, ".modal[data-view]"):
            if title in element.find_element(By.CSS_SELECTOR, ".mtitle").text:
                return element
        return False

    return wait(driver, found)


def on_form(driver: WebDriver, title: str, act: Callable[[WebElement], object]) -> None:
    """`act` on the open modal `title`, found again if the page redrew it meanwhile (the app updated it).

    A redraw between the steps of one WebDriver command (found, then focused) shows as "not interactable"
    (the element it found is detached by then) rather than as stale: both mean "find it again".
    """
    for attempt in range(10):
        try:
            act(modal(driver, title))
            return
        except (StaleElementReferenceException, ElementNotInteractableException):
            if attempt == 9:
                raise
            time.sleep(0.2)


def feed_text(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "feed").text


def audit_message(driver: WebDriver, marker: str, also: str = "") -> WebElement:
    """The top-level message containing ``marker`` (and ``also``), once the page shows it."""

    def found(d: WebDriver) -> WebElement | bool:
        try:
            return next(
                (
                    m
                    for m in d.find_elements(By.CSS_SELECTOR, "#feed > .msg")
                    if marker in m.text and also in m.text
                ),
                False,
            )
        except StaleElementReferenceException:
            return False

    return wait(driver, found)


def reason_and_duration(driver: WebDriver, reason: str, seconds: str) -> None:
    """Choose them in the open invoke form (found again when the app redrew it)."""
    on_form(
        driver, "Break glass", lambda f: Select(f.find_element(By.ID, "in-reason")).select_by_value(reason)
    )
    on_form(
        driver, "Break glass", lambda f: Select(f.find_element(By.ID, "in-duration")).select_by_value(seconds)
    )


def invoke(driver: WebDriver, workspace: LocalWorkspace) -> str:
    """As the engineer, /breakglass, see the inline errors, fill the form, submit; returns the event id."""
    driver.get(workspace.url)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#who option"))
    be(driver, "U0ENG")
    open_pane(driver, "C0OPS")
    type_command(driver, "/breakglass")
    # The app updates the open form by itself (who you are, then the chosen profile's durations): the
    # page redraws it, so each step finds the form again
    on_form(
        driver,
        "Break glass",
        lambda f: Select(f.find_element(By.ID, "in-profile")).select_by_value("sandbox"),
    )
    on_form(driver, "Break glass", lambda f: f.find_element(By.ID, "in-justification").send_keys("too short"))
    on_form(driver, "Break glass", lambda f: f.find_element(By.ID, "modal-submit").click())
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-error="justification"]'))
    shot(driver, "modal-errors")
    errors = driver.find_element(By.CSS_SELECTOR, '[data-error="justification"]').text
    assert "at least 20" in errors
    form = modal(driver, "Break glass")
    assert (
        Select(form.find_element(By.ID, "in-profile")).first_selected_option.get_attribute("value")
        == "sandbox"
    )
    reason_and_duration(driver, "incident", "1800")

    def justify(form: WebElement) -> None:
        box = form.find_element(By.ID, "in-justification")
        box.clear()
        box.send_keys(JUSTIFICATION)

    on_form(driver, "Break glass", justify)
    shot(driver, "modal")
    on_form(driver, "Break glass", lambda f: f.find_element(By.ID, "modal-submit").click())
    wait(driver, lambda d: "sandbox" in modal(d, "Access granted").text)
    click(driver, lambda d: modal(d, "Access granted").find_element(By.ID, "modal-close"))
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, ".modal"))
    events = workspace.runtime.store.list_active()  # type: ignore[union-attr]
    assert [e.profile for e in events] == ["sandbox"]
    return events[0].id


def test_invoke_audit_close_review_in_the_browser(workspace: LocalWorkspace, browser: WebDriver) -> None:
    event_id = invoke(browser, workspace)

    # The audit channel shows the message the bot posted, with its Close button.
    open_pane(browser, AUDIT_CHANNEL)
    message = audit_message(browser, event_id)
    assert "ACTIVE" in message.text
    assert JUSTIFICATION in message.text
    shot(browser, "audit-channel")

    # The engineer's DM from the bot, and App Home listing the active access.
    open_pane(browser, "dm")
    wait(browser, lambda d: event_id in feed_text(d))
    open_pane(browser, "home")
    wait(browser, lambda d: event_id in feed_text(d) and "Break glass" in feed_text(d))
    shot(browser, "app-home")
    click(browser, lambda d: d.find_element(By.CSS_SELECTOR, '#feed [data-action-id="open_breakglass"]'))
    click(browser, lambda d: modal(d, "Break glass").find_element(By.ID, "modal-close"))  # Cancel
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, ".modal"))

    # The incident commander closes it from the audit channel in one step: the close form, its reason.
    be(browser, "U0IC")
    open_pane(browser, AUDIT_CHANNEL)
    click_in_message(browser, event_id, "close_event")
    form = modal(browser, "Close")
    assert not browser.find_elements(By.ID, "confirm-dialog")
    form.find_element(By.ID, "in-close_reason").send_keys("Incident resolved, replica promoted")
    form.find_element(By.ID, "modal-submit").click()
    # the closer gets a confirmation naming the event
    wait(browser, lambda d: event_id in modal(d, "Access closed").text)
    click(browser, lambda d: modal(d, "Access closed").find_element(By.ID, "modal-close"))
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, ".modal"))
    message = audit_message(browser, event_id, "1 reply")
    assert "CLOSED" in message.text
    assert "Incident resolved, replica promoted" in message.find_element(By.CSS_SELECTOR, ".thread").text

    # Security reviews it: Mark reviewed, notes, and the thread says so.
    be(browser, "U0SEC")
    click_in_message(browser, event_id, "review_event")
    form = modal(browser, "Review")
    form.find_element(By.ID, "in-review_notes").send_keys("Checked the session: failover only")
    form.find_element(By.ID, "modal-submit").click()
    message = audit_message(browser, event_id, "2 replies")
    assert "Reviewed by" in message.text
    shot(browser, "reviewed")
    assert workspace.slack.invalid_calls == []
    event = workspace.runtime.store.get(event_id)  # type: ignore[union-attr]
    assert event is not None
    assert event.status.value == "closed"
    assert event.reviewed_by == "U0SEC"


def test_fast_forward_to_warning_and_expiry(workspace: LocalWorkspace, browser: WebDriver) -> None:
    event_id = invoke(browser, workspace)  # 30 minutes; the warning comes 15 minutes before the end
    open_pane(browser, AUDIT_CHANNEL)
    audit_message(browser, event_id)
    click(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-ff="900"]'))
    message = audit_message(browser, event_id, "Expires in")
    assert "ACTIVE" in message.text
    click(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-ff="900"]'))
    message = audit_message(browser, event_id, "EXPIRED")
    assert "2 replies" in message.text
    assert "30 min ahead" in browser.find_element(By.ID, "offset").text
    shot(browser, "expired")
    open_pane(browser, "dm")
    wait(browser, lambda d: "expired" in feed_text(d).lower())
    assert workspace.runtime.store.list_active() == []  # type: ignore[union-attr]


def test_resolving_the_incident_on_the_page_closes_the_event(
    workspace: LocalWorkspace, browser: WebDriver
) -> None:
    browser.get(workspace.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#who option"))
    be(browser, "U0ENG")
    open_pane(browser, "C0OPS")
    type_command(browser, f"/breakglass sandbox 30m incident incident=INC-7 {JUSTIFICATION}")
    wait(browser, lambda d: workspace.runtime.store.list_active())  # type: ignore[union-attr]
    (event,) = workspace.runtime.store.list_active()  # type: ignore[union-attr]
    open_pane(browser, AUDIT_CHANNEL)
    assert "Simulated incident INC-7" in audit_message(browser, event.id).text
    browser.find_element(By.ID, "incident-ref").send_keys("INC-7")
    click(browser, lambda d: d.find_element(By.ID, "resolve-incident"))
    message = audit_message(browser, event.id, "CLOSED")
    assert "the simulated incident tool" in message.text
    assert workspace.runtime.store.list_active() == []  # type: ignore[union-attr]


def test_a_resolved_incident_in_the_form_is_shown_under_the_field(
    workspace: LocalWorkspace, browser: WebDriver
) -> None:
    """The incident is looked up after the submission's ack: refused, the form comes back as it was filled
    in, the reason right below the incident field (a context block); corrected, it grants."""
    browser.get(workspace.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#who option"))
    browser.find_element(By.ID, "incident-ref").send_keys("INC-9")
    click(browser, lambda d: d.find_element(By.ID, "resolve-incident"))
    wait(browser, lambda _d: "INC-9" in workspace.incidents.resolved)
    be(browser, "U0ENG")
    open_pane(browser, "C0OPS")
    type_command(browser, "/breakglass sandbox")  # the form, sandbox chosen: its durations offered
    reason_and_duration(browser, "incident", "1800")
    on_form(
        browser, "Break glass", lambda f: f.find_element(By.ID, "in-justification").send_keys(JUSTIFICATION)
    )
    on_form(browser, "Break glass", lambda f: f.find_element(By.ID, "in-incident").send_keys("INC-9"))
    on_form(browser, "Break glass", lambda f: f.find_element(By.ID, "modal-submit").click())
    error = wait(
        browser,
        lambda d: modal(d, "Break glass").find_elements(By.CSS_SELECTOR, '[data-block="incident_error"]'),
    )[0]
    shot(browser, "modal-incident-refused")
    assert "INC-9 is already resolved" in error.text
    form = modal(browser, "Break glass")
    blocks = [b.get_attribute("data-block") for b in form.find_elements(By.CSS_SELECTOR, ".block")]
    assert blocks.index("incident_error") == blocks.index("incident") + 1  # right below the field
    assert (
        Select(form.find_element(By.ID, "in-profile")).first_selected_option.get_attribute("value")
        == "sandbox"
    )
    assert (
        Select(form.find_element(By.ID, "in-reason")).first_selected_option.get_attribute("value")
        == "incident"
    )
    assert (
        Select(form.find_element(By.ID, "in-duration")).first_selected_option.get_attribute("value") == "1800"
    )
    assert form.find_element(By.ID, "in-justification").get_attribute("value") == JUSTIFICATION
    assert form.find_element(By.ID, "in-incident").get_attribute("value") == "INC-9"
    assert workspace.runtime.store.list_active() == []  # type: ignore[union-attr]

    def correct(form: WebElement) -> None:
        box = form.find_element(By.ID, "in-incident")
        box.clear()
        box.send_keys("INC-10")

    on_form(browser, "Break glass", correct)
    on_form(browser, "Break glass", lambda f: f.find_element(By.ID, "modal-submit").click())
    wait(browser, lambda d: "sandbox" in modal(d, "Access granted").text)
    (event,) = workspace.runtime.store.list_active()  # type: ignore[union-attr]
    assert event.incident_link is not None and event.incident_link.id == "INC-10"
    assert workspace.slack.invalid_calls == []


def extend_in_modal(driver: WebDriver, seconds: str, reason: str) -> None:
    form = modal(driver, "Extend")
    Select(form.find_element(By.ID, "in-extend_duration")).select_by_value(seconds)
    form.find_element(By.ID, "in-extend_reason").send_keys(reason)
    shot(driver, "extend-modal")
    form.find_element(By.ID, "modal-submit").click()
    wait(driver, lambda d: "extended by" in modal(d, "Access extended").text)
    click(driver, lambda d: modal(d, "Access extended").find_element(By.ID, "modal-close"))
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, ".modal"))


def test_extend_from_the_warning_dm_and_from_app_home(workspace: LocalWorkspace, browser: WebDriver) -> None:
    event_id = invoke(browser, workspace)  # sandbox, 30 minutes; warned 15 minutes before the end
    store = workspace.runtime.store  # type: ignore[union-attr]
    first_expiry = store.get(event_id).expires_at
    open_pane(browser, AUDIT_CHANNEL)
    audit_message(browser, event_id)
    click(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-ff="900"]'))
    audit_message(browser, event_id, "Expires in")

    # the warning DM's Extend button opens the small modal
    open_pane(browser, "dm")
    click_in_message(browser, "expires in", "extend_event")
    extend_in_modal(browser, "1800", "Failover still running on the primary")
    assert store.get(event_id).expires_at == first_expiry + timedelta(minutes=30)
    wait(browser, lambda d: "You extended your break-glass access" in feed_text(d))
    open_pane(browser, AUDIT_CHANNEL)
    message = audit_message(browser, event_id, "Extended by 30 minutes")
    assert "extended" in message.text and "ACTIVE" in message.text

    # and once more from App Home
    open_pane(browser, "home")
    click(browser, lambda d: d.find_element(By.CSS_SELECTOR, '#feed [data-action-id="extend_event"]'))
    extend_in_modal(browser, "900", "Replica promotion needs one more check")
    event = store.get(event_id)
    assert [e.duration for e in event.extensions] == [timedelta(minutes=30), timedelta(minutes=15)]
    assert event.expires_at == first_expiry + timedelta(minutes=45)
    assert workspace.slack.invalid_calls == []


def test_an_update_of_only_the_metadata_keeps_the_form_on_screen(
    workspace: LocalWorkspace, browser: WebDriver
) -> None:
    """Slack leaves a modal as it is when an update changes only its private_metadata (the app noting who you
    are, bot.slack.invoke_meta): the page must not redraw it, whatever order the update's keys come in. It
    compared the whole view as JSON, key order included, so the refused form given back and then its
    metadata (the same form, `private_metadata` moved) was drawn twice: what the person had focused, and
    every element a test had found, was detached (a browser test failed on a stale element)."""
    from slack_sdk import WebClient

    browser.get(workspace.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#who option"))
    be(browser, "U0ENG")
    open_pane(browser, "C0OPS")
    type_command(browser, "/breakglass sandbox")
    view_id = str(modal(browser, "Break glass").get_attribute("data-view"))
    wait(browser, lambda _d: (workspace.slack.view(view_id) or {}).get("private_metadata"))  # noted who
    view = workspace.slack.view(view_id)
    assert view is not None
    browser.execute_async_script("refresh().then(arguments[arguments.length - 1])")
    browser.execute_script("window.shownForm = document.querySelector('.modal[data-view]')")
    shown = {k: view[k] for k in ("type", "callback_id", "title", "submit", "close", "blocks") if k in view}
    client = WebClient(token=workspace.slack.token, base_url=workspace.slack.url)
    client.views_update(view_id=view_id, view={"private_metadata": "noted again", **shown})
    browser.execute_async_script("refresh().then(arguments[arguments.length - 1])")
    assert browser.execute_script("return document.querySelector('.modal[data-view]') === window.shownForm")
    client.views_update(view_id=view_id, view={**shown, "title": {"type": "plain_text", "text": "Changed"}})
    browser.execute_async_script("refresh().then(arguments[arguments.length - 1])")
    assert browser.execute_script("return document.querySelector('.modal[data-view]') !== window.shownForm")
    assert "Changed" in modal(browser, "Changed").text  # a real change is drawn


def test_unknown_block_kit_is_shown_raw(workspace: LocalWorkspace, browser: WebDriver) -> None:
    """A block or element the page does not know is shown as a labelled raw box, not dropped."""
    from slack_sdk import WebClient

    client = WebClient(token=workspace.slack.token, base_url=workspace.slack.url)
    client.chat_postMessage(
        channel=AUDIT_CHANNEL,
        text="with unknown parts",
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "known *part*"}},
            {"type": "actions", "elements": [{"type": "datepicker", "action_id": "when"}]},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": []}]},
        ],
    )
    browser.get(workspace.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#who option"))
    open_pane(browser, AUDIT_CHANNEL)
    raws = wait(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, ".raw")) == 2 and d.find_elements(By.CSS_SELECTOR, ".raw")
        ),
    )
    assert 'element type "datepicker"' in raws[0].text
    assert 'block type "rich_text"' in raws[1].text
    assert "known part" in feed_text(browser)


def test_a_chromedriver_that_lost_its_port_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The port selenium chose is taken before chromedriver binds it: the start is retried on a fresh port."""
    import socket

    from selenium.webdriver.common import utils

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real_free_port = utils.free_port
    monkeypatch.setattr(utils, "free_port", lambda: next(ports, None) or real_free_port())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    try:
        with pytest.raises(WebDriverException, match="unexpectedly exited"):
            start_chrome(options, attempts=1)
        ports = iter([taken.getsockname()[1]])
        driver = start_chrome(options, attempts=2)
        try:
            assert driver.execute_script("return 6 * 7") == 42
        finally:
            driver.quit()
    finally:
        taken.close()
