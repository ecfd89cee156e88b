"""examples/python-transcription runs as its README says, against a real server (its waits scaled down)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

from conftest import REPO, Server, wait_for_line
from jobwire import Backend
from test_worker import GUARD, until

EXAMPLE = REPO / "examples" / "python-transcription" / "worker.py"


def test_the_transcription_example_reports_stages_files_and_text_then_stops_on_sigterm(memory_server: Server) -> None:
    server = memory_server
    env = {**os.environ, "JOBWIRE_API_KEY": server.api_key, "JOBWIRE_EXAMPLE_PACE": "0.02", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--url", server.url, "--create", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        wait_for_line(process, "worker ")
        with Backend(server.url, server.api_key) as backend:
            job_id = backend.list_jobs(type="example-python-transcription")["jobs"][0]["id"]
        final = asyncio.run(until(server, job_id, lambda state: state["status"] in ("completed", "failed")))
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=GUARD)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert final["status"] == "completed", final["error"]
    assert [stage["stage"] for stage in final["stages"]] == ["validating", "decoding", "transcribing", "aligning"]
    assert [(item["id"], item["status"], item["percent"]) for item in final["items"]] == [
        (f"episode-1-part-{part}.mp3", "completed", 100) for part in (1, 2, 3)
    ]
    # One transcript line per file, and the last checkpoint lists every file.
    assert len(re.findall(r"\.\n", final["text"])) == 3
    assert final["checkpoint"] == {"done": [f"episode-1-part-{part}.mp3" for part in (1, 2, 3)]}
    assert process.returncode == 0, output
