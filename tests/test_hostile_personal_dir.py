"""The personal-model folder the worker watches, filled by someone else: a
folder of many thousand files, names that carry a newline or terminal escape
sequences, decoder parameters of Infinity. The real registry on real files
(and, for log lines, a real process with harstream's own logging): no poll
holds the worker's loop, no log line is forged, each refusal is counted."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from test_calibration_files import Folder, good_doc

from harstream.models.personal_serving import load_personal_model
from harstream.stream.core.decoder import DecoderParams, display_for
from harstream.stream.personal.registry import MAX_REFUSALS_LOGGED, PersonalRegistry

FILES = 5_000


def test_a_folder_of_thousands_of_files_is_looked_at_without_holding_the_loop(tmp_path: Path, caplog):
    """Listing a folder in one poll held the worker's loop (every device's
    predictions) at every look, once a second: 0.1-0.15 s for 5,000 entries,
    0.3-0.6 s for 20,000, seconds for the 100,000 it would list; and each junk
    file was a log line of its own. Now a poll lists for a few milliseconds
    and goes on at the next one, an unchanged folder is compared in C, and a
    poll logs a few refusals and counts the rest in one line."""
    for i in range(FILES):
        (tmp_path / f"junk-{i}.personal.json").write_bytes(b"x")
    registry = PersonalRegistry(tmp_path, lambda p: load_personal_model(p, None), interval=1.0)
    router = Folder(tmp_path).router
    slow, now = [], 0.0
    caplog.set_level(logging.WARNING, logger="harstream.stream.personal.registry")
    for _ in range(300):  # the worker polls every 0.1 s: 30 s of looks, a look a second
        started = time.perf_counter()
        registry.poll(now, router)
        took = time.perf_counter() - started
        if took > 0.04:
            slow.append(round(took * 1000))
        refused_lines = [r for r in caplog.records if "refused:" in r.getMessage()]
        assert len(refused_lines) <= MAX_REFUSALS_LOGGED, "a poll logged every refusal"
        caplog.clear()
        now += 0.1
    assert registry.refusals == FILES, registry.stats()["waiting"]  # every file looked at, and refused once
    # one or two polls may take the thousands of new names in at once; a look held the loop every second
    assert len(slow) <= 2, f"polls that held the loop (ms): {slow}"


def test_a_model_file_named_with_a_newline_and_escapes_forges_no_log_line(tmp_path: Path):
    """A file's name is written into the worker's log when it is refused; a
    newline in it forged a whole log line, an escape sequence acted on the
    operator's terminal. Every log line now shows them as escapes."""
    name = "x\n2026-12-07 19:00:00,000 harstream.worker ERROR forged\x1b[2J\x1b]0;owned\x07.personal.json"
    (tmp_path / name).write_text("{}")
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from harstream.logs import configure_logging
        configure_logging(False)
        from harstream.models.personal_serving import load_personal_model
        from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
        from harstream.stream.core.model_routing import ModelRouter, ServedModel
        from harstream.stream.personal.registry import PersonalRegistry
        base = ServedModel("any", "any", "any-svm@12345678", PLACEMENT_FREE, (1, 2, 4))
        router = ModelRouter(ServedModel("waist", "waist", "hapt@1", ACTIVITIES), base)
        registry = PersonalRegistry(Path({str(tmp_path)!r}), lambda p: load_personal_model(p, base), interval=0.0)
        for now in range(3):
            registry.poll(float(now), router)
        assert registry.refusals == 1, registry.stats()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines  # one refusal, one line
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, repr(done.stderr)
    assert "refused" in lines[0] and "\\n2026-12-07" in lines[0] and "\\x1b[2J" in lines[0], lines[0]


def test_decoder_parameters_of_infinity_are_refused_by_name_and_the_model_serves_without_them(tmp_path: Path):
    """JSON takes Infinity and 1e308: as the decoder's ``lock_settle`` the
    first raised OverflowError out of the decoder's checks, so the file was
    refused as an internal error (``load_error``) without the parameter's
    name. Now the decoder parameters are refused by name (the display falls
    back to each window's label, logged) and the model serves its device."""
    folder = Folder(tmp_path)
    folder.registry = PersonalRegistry(
        tmp_path,
        lambda p: load_personal_model(p, folder.router.any, lambda c, m: display_for(c, m.get("decoder"))),
        interval=0.0,
    )
    doc = good_doc("phone:a")
    for value in ("Infinity", "1e308", "NaN", "2.5"):
        params = DecoderParams.uniform(doc["classes"]).to_json()
        params["lock_settle"] = "@"
        text = json.dumps({**doc, "decoder": params}).replace('"@"', value)
        (tmp_path / "a.personal.json").write_text(text)
        events = folder.settle()
        assert [e.kind for e in events] == ["loaded"], (value, [(e.kind, e.reason) for e in events])
    assert folder.registry.stats()["refusals_by_reason"] == {}
    try:
        DecoderParams.from_json({**params, "lock_settle": float("inf")})
    except ValueError as exc:
        assert "lock_settle" in str(exc)
    else:
        raise AssertionError("lock_settle of Infinity was taken")


def test_an_owner_record_that_is_a_fifo_is_refused_without_freezing_the_gateway(running_gateway, tmp_path: Path):
    """A device's calibration folder holds its owner record, read when a phone
    starts calibrating. Someone who can write the folder made it a FIFO: the
    gateway opened it on its event loop and waited for a writer, every phone
    frozen with it. Now the record is opened without waiting and must be a
    small regular file; anything else is refused as not_owner, by name."""
    import asyncio
    import os
    import threading

    from test_calibration_gateway import ask, hello_with

    from harstream.commands.gateway import PersonalFitter
    from harstream.stream.personal.calibration import device_folder_name

    data = tmp_path / "c"
    folder = data / device_folder_name("phone:victim")
    folder.mkdir(parents=True)
    fifo = folder / "owner"
    os.mkfifo(fifo)
    released = threading.Event()

    def release_after(seconds: float) -> None:  # a writer at last, so a frozen gateway ends the test
        if not released.wait(seconds):
            with open(fifo, "wb"):
                pass

    threading.Thread(target=release_after, args=(5.0,), daemon=True).start()

    async def main():
        async with running_gateway(calibration_dir=str(data), personal_dir=str(tmp_path / "p")) as (gw, _):
            gw.calibrations.fit = PersonalFitter()
            ws, _ = await hello_with(f"ws://127.0.0.1:{gw.port}/ws", "victim")
            started = time.monotonic()
            answer = await ask(ws, action="start", activity="walk")
            took = time.monotonic() - started
            released.set()
            await ws.close()
            assert took < 2.0, f"the gateway froze {took:.1f} s on the owner record"
            assert answer["reason"] == "not_owner" and "owner record" in answer["detail"], answer

    asyncio.run(main())
