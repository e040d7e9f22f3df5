"""End to end: the studio page in a real headless Chromium against a real uvicorn server.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` package;
skipped with the reason when either is absent. Takes the README's screenshot
(docs/studio.png).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import cakfx
from cakfx.cli import cli
from tests.signals import drums

CHROMIUM = os.environ.get("CAKFX_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SR = 44100

pytestmark = pytest.mark.slow


def _chromium_or_skip():
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    pytest.importorskip("uvicorn", reason="the studio extra (uvicorn) is not installed")


@pytest.fixture
def server(tmp_path):
    """A real uvicorn server on a free loopback port, started and stopped by the test."""
    _chromium_or_skip()
    import uvicorn

    from cakfx.studio.app import LOOPBACK_NAMES, create_app
    from cakfx.studio.core import Studio

    studio = Studio()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(studio, hosts=set(LOOPBACK_NAMES))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield studio, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()
    assert not studio.workdir.exists()  # shutdown removed the temporary files


@pytest.fixture
def page():
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(120_000)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        yield pg
        context.close()
        browser.close()
        assert not errors, errors


def state(page, expr: str):
    return page.evaluate(f"() => window.studio.state.{expr}")


def test_load_tweak_process_ab_and_save_in_a_real_browser(server, page, tmp_path, cakfx_home):
    studio, url = server
    loop = tmp_path / "drumloop.wav"
    audio = drums(3.0, SR, channels=2)
    sf.write(str(loop), audio.T, SR, subtype="PCM_24")

    # without the token the studio refuses the browser too
    assert page.goto(url + "/").status == 403
    page.goto(f"{url}/?token={studio.token}")
    assert page.url == url + "/"  # the token went into a cookie, out of the address bar
    page.wait_for_function("() => window.studio && window.studio.state.ready")

    # load a file (browse/upload)
    page.get_by_test_id("file-input").set_input_files(str(loop))
    page.wait_for_function("() => window.studio.state.buffers.A !== null")
    assert page.get_by_test_id("file-select").locator("option").count() == 1
    assert abs(state(page, "buffers.A.duration") - 3.0) < 1e-3

    # choose a preset: its controls come from the registry; processing starts by itself
    page.get_by_test_id("preset-select").select_option("texture-drums")
    page.wait_for_function("() => window.studio.state.resultId !== null")
    first_result = state(page, "resultId")
    amount = page.get_by_test_id("param-texture-amount")
    assert amount.get_attribute("min") == "0" and amount.get_attribute("max") == "2"
    preset = cakfx.presets.read_preset("texture-drums")
    written = next(e.params["amount"] for e in preset.entries if e.id == "texture")
    assert float(amount.input_value()) == pytest.approx(written)  # the preset's own setting
    assert page.get_by_test_id("param-comp-ratio").count() == 1
    weights = page.get_by_test_id("param-texture-weights")  # a weights picker of installed weights
    assert weights.locator("option:checked").inner_text() == "cak-texture-default"
    assert "cak-grain-default" in weights.locator("option").all_inner_texts()

    # set a control: re-processed with the new value
    amount.evaluate("(el) => { el.value = '1.5'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function(
        "(old) => { const s = window.studio.state; return s.resultId && s.resultId !== old && !s.job; }",
        arg=first_result,
    )
    result_id = state(page, "resultId")
    assert studio.file(result_id).chain[0]["params"]["amount"] == 1.5
    assert float(page.get_by_test_id("progress").evaluate("(el) => el.value")) == 1.0
    assert page.get_by_test_id("error").inner_text() == ""
    expected = cakfx.load_preset("texture-drums", overrides={"texture.amount": 1.5})(
        sf.read(str(loop), dtype="float32", always_2d=True)[0].T.copy(), SR
    )
    played = page.evaluate(
        "() => Array.from(window.studio.state.buffers.B.getChannelData(1).slice(20000, 20400))"
    )
    np.testing.assert_allclose(played, expected[1, 20000:20400], atol=1e-6)  # what B plays is the result

    # an invalid value is refused with the CLI's message
    page.get_by_test_id("param-texture-amount-number").fill("7")
    page.get_by_test_id("param-texture-amount-number").dispatch_event("change")
    page.wait_for_function("() => document.querySelector('[data-testid=error]').textContent.length > 0")
    assert "above the maximum" in page.get_by_test_id("error").inner_text()
    amount.evaluate("(el) => { el.value = '1.5'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function(
        "(old) => { const s = window.studio.state; return s.resultId && s.resultId !== old && !s.job; }",
        arg=result_id,
    )

    # A/B on one transport: both sources run; the toggle moves gains only, at the same position
    page.get_by_test_id("play").click()
    page.wait_for_function("() => window.studio.state.playing && window.studio.currentPosition() > 0.2")
    starts = state(page, "sourceStarts")
    assert page.get_by_test_id("ab-state").inner_text() == "A"
    before = page.evaluate("() => window.studio.currentPosition()")
    page.get_by_test_id("ab-toggle").click()
    after = page.evaluate("() => window.studio.currentPosition()")
    assert page.get_by_test_id("ab-state").inner_text() == "B"
    assert state(page, "gains") == {"A": 0, "B": 1}
    assert state(page, "sourceStarts") == starts  # no source restarted: no gap, same position
    assert 0 <= after - before < 0.5
    page.keyboard.press("a")
    assert page.get_by_test_id("ab-state").inner_text() == "A"
    page.keyboard.press("b")
    assert page.get_by_test_id("ab-state").inner_text() == "B"
    page.get_by_test_id("loudness-match").check()
    gain_b = state(page, "gains.B")
    levels = state(page, "analysis")
    assert gain_b == pytest.approx(10 ** ((levels["A"]["loudness"] - levels["B"]["loudness"]) / 20), rel=1e-6)
    assert "(matched)" in page.get_by_test_id("levels").inner_text()
    # drag on the waveform selects a loop region
    box = page.get_by_test_id("waveform").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.up()
    assert page.get_by_test_id("loop").is_checked()
    loop_region = state(page, "loop")
    assert loop_region["start"] == pytest.approx(0.75, abs=0.05) and loop_region["end"] == pytest.approx(
        1.5, abs=0.05
    )
    page.wait_for_timeout(300)
    shot = ROOT / "docs" / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    page.get_by_test_id("play").click()
    assert not state(page, "playing")

    # save the audio: same rate, channels, format; the samples are the result
    with page.expect_download() as dl:
        page.get_by_test_id("save-audio").click()
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    assert saved.name == "drumloop-texture-drums.wav"
    info = sf.info(str(saved))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 2, 3 * SR, "PCM_24")
    data, _ = sf.read(str(saved), dtype="float32", always_2d=True)
    np.testing.assert_allclose(data.T, np.clip(expected, -1, 1), atol=2 / 2**23)

    # save the chain as a preset: valid, and usable by `cakfx process -p NAME`
    page.get_by_test_id("preset-name").fill("studio-drums")
    page.get_by_test_id("save-preset").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=save-message]').textContent.includes('saved preset')"
    )
    preset_file = cakfx_home / "presets" / "studio-drums.toml"
    assert preset_file.is_file()
    assert CliRunner().invoke(cli, ["presets", "validate", "studio-drums"]).exit_code == 0
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["process", str(loop), "-p", "studio-drums", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    processed, _ = sf.read(str(out / loop.name), dtype="float32", always_2d=True)
    np.testing.assert_allclose(processed, data, atol=2 / 2**23)
    assert page.get_by_test_id("preset-select").input_value() == "studio-drums"
    assert is_png(shot)


def test_batch_report_lists_files_and_ab_loads_input_against_output(tmp_path, page):
    _chromium_or_skip()
    import uvicorn

    from cakfx.studio.app import LOOPBACK_NAMES, create_app
    from cakfx.studio.core import Studio

    folder = tmp_path / "kit"
    folder.mkdir()
    sf.write(str(folder / "hit.wav"), drums(0.7, SR).T, SR)
    (folder / "bad.wav").write_bytes(b"RIFF0000WAVEnope")
    report = tmp_path / "report.json"
    CliRunner().invoke(
        cli, ["process", str(folder), "-p", "demo", "-o", str(tmp_path / "o"), "--report", str(report)]
    )
    studio = Studio(report=report)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(studio, hosts=set(LOOPBACK_NAMES)), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/?token={studio.token}")
        page.wait_for_function("() => window.studio && window.studio.state.ready")
        rows = page.get_by_test_id("batch-list").locator("tr")
        assert rows.count() == 2
        text = page.get_by_test_id("batch-list").inner_text()
        assert "failed" in text and "ok" in text
        assert page.get_by_test_id("batch-ab-1").is_disabled()  # bad.wav: nothing to compare
        page.get_by_test_id("batch-ab-2").click()
        page.wait_for_function("() => window.studio.state.buffers.B !== null")
        out, _ = sf.read(str(tmp_path / "o" / "hit.wav"), dtype="float32", always_2d=True)
        played = page.evaluate(
            "() => Array.from(window.studio.state.buffers.B.getChannelData(0).slice(1000, 1200))"
        )
        np.testing.assert_allclose(played, out[1000:1200, 0], atol=1e-6)
        page.keyboard.press("x")
        assert page.get_by_test_id("ab-state").inner_text() == "B"

        # drop a file on the page: it is uploaded and becomes A
        dropped = tmp_path / "dropped.wav"
        sf.write(str(dropped), drums(0.5, SR, seed=3).T, SR)
        page.evaluate(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.wav", { type: "audio/wav" }));
                const zone = document.querySelector("[data-testid=drop-zone]");
                const drop = new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
                zone.dispatchEvent(drop);
            }""",
            base64.b64encode(dropped.read_bytes()).decode(),
        )
        page.wait_for_function("() => window.studio.state.files.some((f) => f.name === 'dropped.wav')")
        page.wait_for_function(
            "() => window.studio.state.buffers.A && window.studio.state.buffers.A.duration < 0.6"
        )
        assert state(page, "buffers.B") is None  # a new file has nothing processed yet

        # build a chain from the registry: add, reorder, remove; controls follow the registry
        page.get_by_test_id("auto-process").uncheck()
        for effect in ("pedalboard.Gain", "pedalboard.Reverb"):
            page.get_by_test_id("add-effect-select").select_option(effect)
            page.get_by_test_id("add-effect").click()
        gain_db = page.get_by_test_id("param-gain-gain_db")
        assert gain_db.count() == 1 and page.get_by_test_id("param-reverb-room_size").count() == 1
        page.get_by_test_id("entry-up-2").click()
        assert page.evaluate("() => window.studio.state.chain.map((e) => e.effect)") == [
            "pedalboard.Reverb",
            "pedalboard.Gain",
        ]
        page.get_by_test_id("entry-remove-1").click()
        assert page.evaluate("() => window.studio.state.chain.map((e) => e.id)") == ["gain"]
        assert page.get_by_test_id("entry-1").locator("b").inner_text() == "1. pedalboard.Gain [gain]"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def is_png(path: Path) -> bool:
    head = path.read_bytes()[:8]
    return head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
