"""The studio's JSON API, through Starlette's test client, on real files made here."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import cakfx
from cakfx.cli import cli
from tests.signals import drums, tone

pytest.importorskip("starlette", reason="the studio extra (starlette) is not installed")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from cakfx.studio.app import create_app  # noqa: E402
from cakfx.studio.core import Studio  # noqa: E402

SR = 44100


def write(path: Path, audio: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), audio.T, sr, subtype=subtype)
    return path


@pytest.fixture
def loop(tmp_path) -> Path:
    return write(tmp_path / "loop.wav", drums(1.5, SR, channels=2), subtype="PCM_24")


@pytest.fixture
def studio(loop):
    s = Studio(files=[loop])
    yield s
    s.close()


@pytest.fixture
def client(studio):
    with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as c:
        yield c


def first_file(client) -> dict:
    return client.get("/api/files").json()[0]


def run_job(client, studio, body: dict) -> dict:
    r = client.post("/api/process", json=body)
    assert r.status_code == 200, r.text
    job = studio.wait(r.json()["id"])
    out = client.get(f"/api/jobs/{job.id}").json()
    assert out["state"] == "done", out
    return out


def result_audio(client, file_id: str) -> tuple[np.ndarray, int]:
    r = client.get(f"/api/files/{file_id}/audio")
    assert r.status_code == 200
    data, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return data.T, sr


# ---- processing ----------------------------------------------------------------------


def test_process_a_preset_equals_load_preset_on_the_same_file(client, studio, loop):
    f = first_file(client)
    assert (f["sample_rate"], f["channels"], f["name"]) == (SR, 2, "loop.wav")
    job = run_job(client, studio, {"file": f["id"], "preset": "texture-drums"})
    got, sr = result_audio(client, job["result"])
    audio, _ = sf.read(str(loop), dtype="float32", always_2d=True)
    expected = cakfx.load_preset("texture-drums")(audio.T.copy(), SR)
    assert sr == SR and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - audio.T).max() > 1e-3  # it did something


def test_an_edited_chain_equals_the_preset_with_the_same_overrides(client, studio, loop):
    f = first_file(client)
    chain = client.get("/api/presets/texture-drums").json()["chain"]
    chain[0]["params"]["amount"] = 1.3
    chain[1]["params"]["ratio"] = 6.0
    job = run_job(client, studio, {"file": f["id"], "chain": chain, "preset": "texture-drums"})
    got, _ = result_audio(client, job["result"])
    audio, _ = sf.read(str(loop), dtype="float32", always_2d=True)
    expected = cakfx.load_preset("texture-drums", overrides={"texture.amount": 1.3, "comp.ratio": 6.0})(
        audio.T.copy(), SR
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    meta = client.get(f"/api/files/{job['result']}").json()
    assert meta["origin"] == "result" and meta["chain"][0]["params"]["amount"] == 1.3


def test_two_tabs_processing_at_once_each_get_their_own_result(client, studio, loop):
    f = first_file(client)
    audio, _ = sf.read(str(loop), dtype="float32", always_2d=True)
    amounts = [0.2, 1.8, 0.9, 1.4]
    jobs: dict[float, str] = {}

    def tab(amount):
        chain = [{"effect": "cak.texture", "id": "texture", "params": {"amount": amount}}]
        jobs[amount] = client.post("/api/process", json={"file": f["id"], "chain": chain}).json()["id"]

    threads = [threading.Thread(target=tab, args=(a,)) for a in amounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for amount, job_id in jobs.items():
        assert studio.wait(job_id).state == "done"
        got, _ = result_audio(client, studio.job(job_id).result)
        expected = cakfx.create_effect("cak.texture", amount=amount)(audio.T.copy(), SR)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_invalid_values_are_refused_with_the_cli_message(client, loop, tmp_path):
    f = first_file(client)
    chain = [{"effect": "cak.texture", "id": "texture", "params": {"amount": 5}}]
    r = client.post("/api/process", json={"file": f["id"], "chain": chain})
    assert r.status_code == 400
    message = r.json()["error"]
    cli_out = CliRunner().invoke(
        cli,
        [
            "process",
            str(loop),
            "-p",
            "texture-subtle",
            "-o",
            str(tmp_path / "o"),
            "--set",
            "texture.amount=5",
        ],
    )
    assert cli_out.exit_code != 0
    # the same words as the CLI, after the file/entry prefix
    assert message.startswith("chain entry 1 (id 'texture'): amount: ") and "above the maximum" in message
    assert message.split("amount: ", 1)[1] in cli_out.output
    r = client.post("/api/process", json={"file": f["id"], "chain": [{"effect": "cak.textur", "params": {}}]})
    assert r.status_code == 400 and "did you mean 'cak.texture'" in r.json()["error"]
    r = client.post("/api/process", json={"file": f["id"], "chain": []})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    assert client.post("/api/process", content=b"{nope").status_code == 400


def test_cancel_a_queued_job_leaves_no_result(loop):
    studio = Studio(files=[loop], workers=1)
    try:
        gate = threading.Event()
        studio._pool.submit(gate.wait)  # keep the only worker busy so the job stays queued
        f = studio.list_files()[0]
        job = studio.submit(f["id"], [{"effect": "cak.texture", "params": {"amount": 1.0}}])
        assert job.state == "queued"
        assert studio.cancel(job.id).state == "cancelled"
        gate.set()
        studio._pool.submit(lambda: None).result(timeout=60)
        assert studio.job(job.id).state == "cancelled" and studio.job(job.id).result is None
    finally:
        studio.close()


# ---- saving --------------------------------------------------------------------------


def test_download_keeps_rate_channels_and_format_or_takes_a_chosen_one(tmp_path):
    src = write(tmp_path / "take.flac", tone(0.8, 48000, channels=3), 48000, subtype="PCM_16")
    studio = Studio(files=[src])
    try:
        with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
            f = first_file(client)
            job = run_job(
                client,
                studio,
                {"file": f["id"], "chain": [{"effect": "pedalboard.Gain", "params": {"gain_db": -6.0}}]},
            )
            r = client.get(f"/api/files/{job['result']}/download")
            assert r.status_code == 200
            assert 'filename="take-studio.flac"' in r.headers["content-disposition"]
            out = tmp_path / "saved.flac"
            out.write_bytes(r.content)
            info = sf.info(str(out))
            assert (info.samplerate, info.channels, info.frames, info.format, info.subtype) == (
                48000,
                3,
                int(0.8 * 48000),
                "FLAC",
                "PCM_16",
            )
            data, _ = sf.read(str(out), always_2d=True)
            original, _ = sf.read(str(src), always_2d=True)
            np.testing.assert_allclose(data, original * 10 ** (-6 / 20), atol=2 / 32768)
            r = client.get(f"/api/files/{job['result']}/download?format=wav")
            assert r.headers["content-disposition"].endswith('take-studio.wav"')
            assert sf.info(io.BytesIO(r.content)).format == "WAV"
            assert client.get(f"/api/files/{job['result']}/download?format=exe").status_code == 400
    finally:
        studio.close()


def test_saved_preset_validates_and_processes_like_the_studio(client, studio, loop, cakfx_home):
    f = first_file(client)
    chain = client.get("/api/presets/texture-drums").json()["chain"]
    chain[0]["params"]["amount"] = 1.1
    body = {"name": "my-drums", "description": "from the studio", "chain": chain, "preset": "texture-drums"}
    r = client.post("/api/presets", json=body)
    assert r.status_code == 200, r.text
    path = Path(r.json()["path"])
    assert path == cakfx_home / "presets" / "my-drums.toml" and path.is_file()
    ok = CliRunner().invoke(cli, ["presets", "validate", "my-drums"])
    assert ok.exit_code == 0 and "ok:" in ok.output
    job = run_job(client, studio, {"file": f["id"], "chain": chain, "preset": "texture-drums"})
    got, _ = result_audio(client, job["result"])
    audio, _ = sf.read(str(loop), dtype="float32", always_2d=True)
    np.testing.assert_allclose(got, cakfx.load_preset("my-drums")(audio.T.copy(), SR), atol=1e-6)
    # saving again needs overwrite; it is then listed as a user preset
    assert client.post("/api/presets", json=body).status_code == 409
    assert client.post("/api/presets", json={**body, "overwrite": True}).status_code == 200
    rows = {p["name"]: p for p in client.get("/api/presets").json()}
    assert rows["my-drums"]["source"] == "user" and rows["my-drums"]["description"] == "from the studio"


# ---- safety --------------------------------------------------------------------------


def test_missing_or_wrong_token_is_403(studio):
    wrong = studio.token[:-1] + ("y" if studio.token.endswith("x") else "x")  # one character off
    with TestClient(create_app(studio)) as client:
        for path in ("/", "/api/info", "/api/files", "/static/studio.js"):
            assert client.get(path).status_code == 403
            assert client.get(path, headers={"X-Cakfx-Token": "wrong"}).status_code == 403
            assert client.get(path + "?token=" + wrong).status_code == 403
        assert client.post("/api/process", json={}).status_code == 403
        # the token in the URL becomes a cookie and leaves the address bar
        r = client.get(f"/?token={studio.token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert (
            "httponly" in r.headers["set-cookie"].lower()
            and "samesite=strict" in r.headers["set-cookie"].lower()
        )
        page = client.get("/")
        assert page.status_code == 200 and 'data-testid="ab-toggle"' in page.text
        assert client.get("/api/info").status_code == 200
        # the cookie alone never changes anything: writes need the header or ?token=
        assert client.post("/api/presets", json={"name": "x", "chain": []}).status_code == 403


def test_foreign_host_header_is_refused(studio):
    with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"Host": "evil.example:8000"}).status_code == 403
        assert client.get("/api/info", headers={"Host": "127.0.0.1.evil.example"}).status_code == 403
    with TestClient(
        create_app(Studio(), hosts={"127.0.0.1", "localhost"}),
        base_url="http://127.0.0.1:5000",
        headers={"X-Cakfx-Token": "t"},
    ) as other:
        assert other.get("/api/info").status_code == 403  # wrong token, right host


def test_path_traversal_is_refused(client, studio, tmp_path):
    secret = tmp_path / "secret.wav"
    write(secret, tone(0.2))
    for path in (
        "/api/files/..%2F..%2Fetc%2Fpasswd/audio",
        f"/api/files/{secret}/audio",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/../app.py",
        "/static/index.html.bak",
        "/api/presets/..%2F..%2Fetc%2Fpasswd",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"root:" not in r.content
    # a file parameter from a request never reaches the disk
    r = client.post(
        "/api/process",
        json={
            "file": first_file(client)["id"],
            "chain": [
                {"effect": "pedalboard.Convolution", "params": {"impulse_response_filename": str(secret)}}
            ],
        },
    )
    assert r.status_code == 400 and "only uses files named by an installed preset" in r.json()["error"]
    r = client.post(
        "/api/process",
        json={
            "file": first_file(client)["id"],
            "chain": [{"effect": "cak.texture", "params": {"weights": "/etc/x.safetensors"}}],
        },
    )
    assert r.status_code == 400
    # preset names cannot leave the user preset folder
    for name in ("../evil", "a/b", ".hidden", "", "x" * 65):
        r = client.post(
            "/api/presets", json={"name": name, "chain": [{"effect": "pedalboard.Gain", "params": {}}]}
        )
        assert r.status_code == 400, name
    assert not (tmp_path / "evil.toml").exists()
    # an upload's name is only a label: it is stored under an id in the studio's folder
    r = client.post("/api/upload?name=../../escape.wav", content=secret.read_bytes())
    assert r.status_code == 200 and r.json()["name"] == "escape.wav"
    assert not (studio.workdir.parent / "escape.wav").exists() and not (tmp_path / "escape.wav").exists()
    assert r.json()["id"] in [f["id"] for f in client.get("/api/files").json()]


def test_oversized_or_bad_uploads_are_refused_with_a_clear_message(loop):
    studio = Studio(max_upload=10_000)
    try:
        with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
            r = client.post("/api/upload?name=big.wav", content=loop.read_bytes())
            assert r.status_code == 413
            assert (
                r.json()["error"].startswith("upload too large:") and "--max-upload-mb" in r.json()["error"]
            )
            r = client.post("/api/upload?name=notes.txt", content=b"hello")
            assert r.status_code == 400 and "not an audio file name" in r.json()["error"]
            r = client.post("/api/upload?name=broken.wav", content=b"RIFF....WAVEjunk")
            assert r.status_code == 400 and "upload 'broken.wav'" in r.json()["error"]
            assert client.get("/api/files").json() == []
            assert [p.name for p in studio.workdir.iterdir()] == []  # refused uploads leave nothing
    finally:
        studio.close()


def test_close_removes_the_temporary_folder(loop):
    studio = Studio(files=[loop])
    with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
        f = first_file(client)
        run_job(
            client,
            studio,
            {"file": f["id"], "chain": [{"effect": "pedalboard.Gain", "params": {"gain_db": -3.0}}]},
        )
        assert client.get(f"/api/files/{f['id']}/audio").status_code == 200
        assert any(studio.workdir.iterdir())
    assert not studio.workdir.exists()  # the app's shutdown closed the studio
    assert loop.is_file()  # given files are never touched


# ---- analysis, batch, command --------------------------------------------------------


def test_analysis_gives_waveform_spectrogram_and_level(client):
    f = first_file(client)
    a = client.get(f"/api/files/{f['id']}/analysis").json()
    assert len(a["waveform"]["min"]) == len(a["waveform"]["max"]) == 1200
    assert min(a["waveform"]["min"]) < -0.2 and max(a["waveform"]["max"]) > 0.2
    spec = a["spectrogram"]
    import base64

    img = np.frombuffer(base64.b64decode(spec["data"]), np.uint8).reshape(spec["columns"], spec["bins"])
    assert img.max() > 150 and img.min() < 60  # real content on a fixed dB scale
    assert a["loudness_unit"] in ("LUFS", "dBFS RMS") and -40 < a["loudness"] < 0


def test_listen_through_a_batch_report(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.wav", drums(0.6, SR))
    write(folder / "b.wav", tone(0.5, SR))
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEnot audio")
    report = tmp_path / "out" / "report.json"
    r = CliRunner().invoke(
        cli,
        ["process", str(folder), "-p", "demo", "-o", str(tmp_path / "out"), "--report", str(report), "-q"],
    )
    assert r.exit_code == 1  # the broken file
    studio = Studio(report=report)
    try:
        with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
            batch = client.get("/api/batch").json()
            rows = {Path(row["name"]).name: row for row in batch["files"]}
            assert batch["preset"] == "demo" and set(rows) == {"a.wav", "b.wav", "broken.wav"}
            assert rows["broken.wav"]["status"] == "failed" and rows["broken.wav"]["output"] is None
            assert rows["broken.wav"]["reason"]
            for name in ("a.wav", "b.wav"):
                row = rows[name]
                assert row["status"] == "ok" and row["input"] and row["output"]
                got, _ = result_audio(client, row["output"])
                on_disk, _ = sf.read(str(tmp_path / "out" / name), dtype="float32", always_2d=True)
                np.testing.assert_allclose(got, on_disk.T, atol=1e-7)
            assert client.get("/api/info").json()["batch"]["report"] == "report.json"
    finally:
        studio.close()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(cakfx.CakfxError, match="no 'files' list"):
        Studio(report=bad)


def test_the_command_module_imports_neither_starlette_nor_torch():
    # cakfx itself may still import torch until the core lane's torch-free CLI lands;
    # what matters here is that the studio's command adds none of them
    code = (
        "import sys, cakfx.plugin_manager; before = set(sys.modules); import cakfx.studio.command; "
        "bad = [m for m in ('starlette', 'uvicorn', 'torch') if m in set(sys.modules) - before]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_studio_command_help_and_missing_extra(monkeypatch):
    from cakfx.studio import command

    listing = CliRunner().invoke(cli, ["--help"])
    rows = [line.split(None, 1) for line in listing.output.splitlines() if line.strip().startswith("studio ")]
    assert rows and rows[0][1].startswith("Load, tweak, A/B and save in the browser")
    r = CliRunner().invoke(cli, ["studio", "--help"])
    assert r.exit_code == 0 and "--no-browser" in r.output and "--report" in r.output
    monkeypatch.setattr(command, "_have_server", lambda: False)
    r = CliRunner().invoke(cli, ["studio", "--no-browser"])
    assert r.exit_code == 1
    assert r.output.strip() == "Error: cakfx studio needs the studio extra: pip install 'cakfx[studio]'"


def test_studio_command_refuses_a_missing_file_in_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["studio", str(tmp_path / "nope.wav"), "--no-browser"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "nope.wav: no such file" in r.output


def test_api_json_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Studio", 1)[1]
    for route in ("/api/files", "/api/process", "/api/jobs/", "/api/presets", "/api/upload", "/api/batch"):
        assert route in section, route


def test_the_real_command_serves_and_ctrl_c_stops_it_cleanly(loop, tmp_path):
    """`cakfx studio` on uvicorn: prints a tokened loopback URL, answers it, and on
    SIGINT exits 0 having removed its temporary folder."""
    import os
    import signal
    import urllib.error
    import urllib.request

    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cakfx", "studio", str(loop), "--no-browser"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("cakfx studio: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        base, token = url.split("/?token=")
        assert len(token) >= 32 and [p.name for p in temp.iterdir()][0].startswith("cakfx-studio-")
        request = urllib.request.Request(base + "/api/files", headers={"X-Cakfx-Token": token})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert [f["name"] for f in json.loads(r.read())] == ["loop.wav"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/files", timeout=60)
        assert refused.value.code == 403
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert list(temp.iterdir()) == []  # temporary files removed


def test_old_results_are_dropped_from_disk(client, studio, monkeypatch):
    from cakfx.studio import core

    monkeypatch.setattr(core, "MAX_RESULTS", 2)
    f = first_file(client)
    ids = []
    for gain in (-1.0, -2.0, -3.0):
        chain = [{"effect": "pedalboard.Gain", "params": {"gain_db": gain}}]
        ids.append(run_job(client, studio, {"file": f["id"], "chain": chain})["result"])
    assert client.get(f"/api/files/{ids[0]}").status_code == 404
    assert all(client.get(f"/api/files/{i}/audio").status_code == 200 for i in ids[1:])
    assert len(list(studio.workdir.glob("*.result.wav"))) == 2
    assert first_file(client)["id"] == f["id"]  # the input stays


def test_any_host_but_loopback_gets_a_loud_warning(monkeypatch):
    from cakfx.studio import server

    calls = []
    monkeypatch.setattr(server, "serve", lambda **kw: calls.append(kw))
    r = CliRunner().invoke(cli, ["studio", "--host", "0.0.0.0", "--no-browser"])
    assert r.exit_code == 0 and "WARNING: listening on 0.0.0.0" in r.output
    assert calls[0]["host"] == "0.0.0.0" and calls[0]["open_browser"] is False
    r = CliRunner().invoke(cli, ["studio", "--no-browser"])
    assert "WARNING" not in r.output and calls[1]["host"] == "127.0.0.1"
