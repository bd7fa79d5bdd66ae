"""The voice page in a real browser: headless Chromium driven by selenium.

The web app (``charivo_fsm.web.run.running_web``: ``create_app`` served by
uvicorn on 127.0.0.1, an embedded local realtime server with server VAD and
real-time audio) runs in a thread of its own.  Chromium's fake microphone plays
a WAV made here with ``espeak-ng`` and ``sox``: 0.5 s of silence, a question,
3 s of silence, a second sentence (it starts while the answer to the first is
playing: a barge-in), then silence.

What the page observed is read from its ``#status`` JSON element.  The test
checks: the server's VAD heard the speech; the answer's audio played in the
page; the second sentence stopped playback at once, and the server truncated
the answer where the page had played it; the Interrupt button stops playback
and truncates at the reported position; a typed weather question shows a tool
call and its result; Stop ends the session.  Other tests: push to talk (hold
the button while the WAV speaks, release: committed and answered); a refused
microphone and a backend that goes away, each explained on the page.

Nothing is downloaded: Debian's ``chromium`` and ``/usr/bin/chromedriver`` are
used (selenium-manager is disabled for the test).  Without them, ``espeak-ng``
or ``sox``, the tests skip and say why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get install chromium chromium-driver espeak-ng sox"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing() -> list[str]:
    missing = []
    if _chromium() is None:
        missing.append("chromium")
    if not Path(CHROMEDRIVER).is_file():
        missing.append(CHROMEDRIVER)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


if _missing():
    pytest.skip(
        f"browser test skipped: {', '.join(_missing())} not installed ({INSTALL_HINT})",
        allow_module_level=True,
    )

selenium = pytest.importorskip("selenium", reason="browser test skipped: selenium not installed")
pytest.importorskip("uvicorn", reason="browser test skipped: uvicorn not installed")

import anyio.from_thread  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from charivo_fsm.web.run import WebServer, running_web  # noqa: E402
from tests.sdk_validation import validate_client_event, validate_server_event  # noqa: E402

FIRST = "Hello there. What is the weather like in Paris today?"
SECOND = "Wait, stop talking. Tell me something else, please."


def _speech_wav(folder: Path) -> Path:
    """The fake microphone's input, PCM16 mono 48 kHz (the capture rate Chromium uses)."""

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    run("espeak-ng", "-s", "160", "-w", str(folder / "first.wav"), FIRST)
    run("espeak-ng", "-s", "160", "-w", str(folder / "second.wav"), SECOND)
    pcm = ("-r", "48000", "-c", "1", "-b", "16")
    run("sox", str(folder / "first.wav"), *pcm, str(folder / "a.wav"), "pad", "0.5", "3.0")
    run("sox", str(folder / "second.wav"), *pcm, str(folder / "b.wav"), "pad", "0", "30")
    out = folder / "speech.wav"
    run("sox", str(folder / "a.wav"), str(folder / "b.wav"), str(out))
    return out


@pytest.fixture(scope="module")
def web() -> Iterator[WebServer]:
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        with portal.wrap_async_context_manager(running_web(port=0)) as server:
            yield server
    # As for every local server of the suite (tests/conftest.py, which does not
    # see this module-wide one): all traffic validates against the openai SDK.
    assert server.local is not None
    for event in server.local.received:
        validate_client_event(event)
    for event in server.local.sent:
        validate_server_event(event)


@pytest.fixture(autouse=True)
def _no_selenium_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver and the browser are given: selenium-manager must not run."""
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("selenium-manager must not be used")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)


def _browser(*arguments: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(_chromium())
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        *arguments,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@contextmanager
def _page(*arguments: str) -> Iterator[Page]:
    driver = _browser(*arguments)
    try:
        yield Page(driver)
    finally:
        driver.quit()


def _speaking(wav: Path) -> tuple[str, ...]:
    """Chromium arguments: a fake microphone playing ``wav`` once, allowed."""
    return (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    )


class Page:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def status(self) -> dict[str, Any]:
        text = self.driver.find_element(By.ID, "status").get_attribute("textContent")
        result: dict[str, Any] = json.loads(text or "{}")
        return result

    def script(self, code: str) -> Any:
        return self.driver.execute_script(code)

    def playing(self) -> int:
        return int(self.script("return window.charivo.player.playing.size"))

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait("the backend socket opens", lambda s: s["link"] == "open")

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def wait(
        self, what: str, check: Callable[[dict[str, Any]], object], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                logs = [entry["message"] for entry in self.driver.get_log("browser")]
                raise AssertionError(f"page: {what} did not happen; status {status}; logs {logs}")
            time.sleep(0.05)


def _wait_server(check: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"server: {what} did not happen")
        time.sleep(0.05)


def _truncation(web: WebServer, item_id: str) -> int:
    assert web.local is not None
    found: list[int] = []

    def seen() -> bool:
        assert web.local is not None
        found[:] = [
            event["audio_end_ms"]
            for event in web.local.received_of("conversation.item.truncate")
            if event["item_id"] == item_id
        ]
        return bool(found)

    _wait_server(seen, f"a truncation of {item_id}")
    assert len(found) == 1
    return found[0]


def test_voice_page(web: WebServer, tmp_path: Path) -> None:
    assert web.local is not None
    server = web.local
    with _page(*_speaking(_speech_wav(tmp_path))) as page:
        driver = page.driver
        page.open(web.url)
        # Start: microphone on, session active.
        page.click("start")
        page.wait("the session starts", lambda s: s["session"] == "active" and s["mic"] == "on")

        # The first sentence: the server's VAD hears it, the answer plays.
        page.wait("speech is detected", lambda s: s["speechStarts"] >= 1)
        assert server.sent_of("input_audio_buffer.speech_started")
        page.wait("the end of speech", lambda s: s["speechStops"] >= 1)
        status = page.wait("the answer plays", lambda s: s["audioChunksPlayed"] >= 10)
        assert status["msPlayed"] >= 400 and status["lipsyncUpdates"] > 0
        assert status["userTranscripts"] >= 1 and status["micChunksSent"] > 0
        assert page.playing() > 0

        # The second sentence starts while the answer plays: barge-in.
        status = page.wait("a barge-in", lambda s: s["bargeIns"] >= 1)
        assert page.playing() == 0  # stopped at once
        cut = status["cuts"][-1]
        assert cut["reason"] == "barge-in" and cut["playedMs"] > 0
        cancelled = [
            e["response"]["status_details"]
            for e in server.sent_of("response.done")
            if e["response"]["status"] == "cancelled"
        ]
        assert cancelled and cancelled[0]["reason"] == "turn_detected"
        # The engine truncated the answer at the page's last report (every 100 ms):
        # never past what was played, at most a few reports behind.
        truncated = _truncation(web, cut["itemId"])
        assert 0 <= cut["playedMs"] - truncated <= 1000, (cut, truncated)
        time.sleep(0.3)
        assert page.playing() == 0  # the rest of that answer is not played

        # The answer to the second sentence; Interrupt stops it.
        page.wait("the end of the second sentence", lambda s: s["speechStops"] >= 2)
        chunks = status["audioChunksPlayed"]
        page.wait(
            "the second answer plays",
            lambda s: s["assistantStarts"] >= 2 and s["audioChunksPlayed"] > chunks + 5,
        )
        page.click("interrupt")
        status = page.wait("the interrupt", lambda s: s["interruptStops"] >= 1)
        assert page.playing() == 0
        cut = status["cuts"][-1]
        assert cut["reason"] == "interrupt"
        # An interrupt reports the position first: the cut is exactly there.
        assert abs(_truncation(web, cut["itemId"]) - cut["playedMs"]) <= 1, cut

        # A typed question about the weather: a tool call, its result, a spoken answer.
        played_before = status["msPlayed"]
        field = driver.find_element(By.ID, "text-input")
        field.send_keys("What's the weather in Paris?")
        page.click("send")
        page.wait("a tool call", lambda s: s["toolCalls"] >= 1 and s["toolResults"] >= 1)
        call = driver.find_element(By.CSS_SELECTOR, '#tools li[data-name="get_weather"]')
        assert "Paris" in call.text and "sunny" in call.text
        page.wait("the tool's answer plays", lambda s: s["msPlayed"] >= played_before + 400)

        # Stop.
        page.click("stop")
        status = page.wait("the session stops", lambda s: s["session"] == "stopped")
        assert status["sessionsEnded"] == 1 and status["link"] == "open"
        _wait_server(lambda: server.active_connections == 0, "the transport disconnects")
        transcript = driver.find_element(By.ID, "transcript").text
        assert "You said" in transcript and "What's the weather in Paris?" in transcript
        errors = [e for e in status["errors"] if not e.startswith("command_failed")]
        assert errors == []
    _wait_server(lambda: web.app.state.page_sessions == 0, "the page session ends")


def test_push_to_talk(web: WebServer, tmp_path: Path) -> None:
    """Push to talk: no server VAD; the talk button held while the WAV speaks,
    released: the audio is committed and answered."""
    assert web.local is not None
    server = web.local
    commits_before = len(server.received_of("input_audio_buffer.commit"))
    with _page(*_speaking(_speech_wav(tmp_path))) as page:
        page.open(web.url)
        page.click("ptt-mode")
        page.click("start")
        page.wait("the session starts", lambda s: s["session"] == "active" and s["mic"] == "on")
        assert page.status()["pushToTalk"] is True
        talk = page.driver.find_element(By.ID, "talk")
        ActionChains(page.driver).click_and_hold(talk).pause(2.5).release(talk).perform()
        status = page.wait("the answer plays", lambda s: s["audioChunksPlayed"] >= 5)
        assert status["speechStarts"] == 0  # no VAD in push to talk
        assert status["micChunksSent"] > 0 and status["userTranscripts"] == 1
        assert len(server.received_of("input_audio_buffer.commit")) == commits_before + 1
        page.click("stop")
        page.wait("the session stops", lambda s: s["session"] == "stopped")
    _wait_server(lambda: web.app.state.page_sessions == 0, "the page session ends")


def test_microphone_refused_and_backend_gone(tmp_path: Path) -> None:
    with _page("--use-fake-device-for-media-stream", "--deny-permission-prompts") as page:
        driver = page.driver
        with anyio.from_thread.start_blocking_portal("asyncio") as portal:
            with portal.wrap_async_context_manager(running_web(port=0)) as web:
                page.open(web.url)
                page.click("start")
                status = page.wait("the refusal", lambda s: s["mic"] == "denied")
                notice = driver.find_element(By.ID, "notice")
                assert notice.is_displayed()
                assert "Microphone access was refused" in notice.text
                # Typing still works without a microphone.
                page.wait("the session starts", lambda s: s["session"] == "active")
                assert status["micChunksSent"] == 0
        # The backend is gone (the server shut down under the page).
        page.wait("the backend goes away", lambda s: s["link"] == "closed")
        assert "The backend is gone" in driver.find_element(By.ID, "notice").text
