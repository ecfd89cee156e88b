"""The Python reducer and error registry against the TypeScript ones (@jobwire/protocol's build),
computed at test time: a change on either side that the other does not follow fails here."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from conftest import Server, node
import base64

from jobwire import ERROR_REGISTRY, JOB_ERROR_REGISTRY, Backend, mint_subscription_token
from jobwire.reducer import ReducerError, apply_event

HERE = Path(__file__).resolve().parent / "conformance"


class Log:
    """Builds one job's event log: consecutive seqs, a clock that ticks a second per event."""

    def __init__(self, job_id: str = "job-1") -> None:
        self.job_id = job_id
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, /, **data: Any) -> Log:
        seq = len(self.events) + 1
        self.events.append({"jobId": self.job_id, "seq": seq, "type": kind, "at": f"2026-12-04T10:00:{seq:02d}.000Z", "data": data})
        return self

    def created(self, dispatch: bool = True, max_attempts: int = 3) -> Log:
        return self.add("created", type="transcription", input={"files": ["a.mp3"]}, owner={"tenant": "acme", "user": "ada"}, dispatch=dispatch, maxAttempts=max_attempts)

    def raw(self, event: dict[str, Any]) -> Log:
        self.events.append(event)
        return self


def _stage_cycle(changes: int) -> list[dict[str, Any]]:
    log = Log().created().add("started", attempt=1, worker="w1")
    for i in range(changes):
        log = log.add("progress", stage=f"s{i % 7}-{i}")
    return log.events


def fixture_logs() -> list[list[dict[str, Any]]]:
    return [
        # Stages, a percent and message kept until the stage changes, items merged field by field, text, a result.
        Log().created().add("started", attempt=1, worker="w1")
        .add("progress", stage="decoding", percent=10, message="reading")
        .add("progress", percent=40)
        .add("progress", stage="decoding", message="still reading")
        .add("progress", stage="transcribing")
        .add("item", id="a.mp3", label="a.mp3", status="running", percent=5)
        .add("item", id="b.mp3")
        .add("item", id="a.mp3", percent=70, message="halfway")
        .add("item", id="a.mp3", status="completed")
        .add("chunk", text="Hello ")
        .add("chunk", text="wörld ✓ 🎉")
        .add("checkpoint", data={"done": ["a.mp3"], "offset": 12})
        .add("completed", result={"words": 2}).events,
        # More stage changes than the timeline keeps: the oldest go.
        _stage_cycle(130),
        # A lost worker, a retry with an error, then a failure for good.
        Log().created().add("started", attempt=1, worker="w1")
        .add("checkpoint", data={"i": 3})
        .add("requeued", reason="worker_lost", attempt=1, retryAt=None)
        .add("started", attempt=2, worker="w2")
        .add("failed", code="upstream_timeout", message="timed out", retryable=True)
        .add("requeued", reason="upstream_timeout", attempt=2, retryAt="2026-12-04T10:01:00.000Z", error={"code": "upstream_timeout", "message": "timed out"})
        .add("started", attempt=3, worker=None)
        .add("failed", code="broken", message="for good", retryable=False).events,
        # Given back unrun (the attempt does not count), started again as attempt 1, lost, then completed.
        Log().created().add("started", attempt=1, worker="w1")
        .add("requeued", reason="worker stopping", attempt=1, retryAt=None, counted=False)
        .add("started", attempt=1, worker="w2")
        .add("requeued", reason="worker_lost", attempt=1, retryAt=None)
        .add("started", attempt=2, worker="w3")
        .add("completed", result=None).events,
        # Cancelled while queued, resumed with more attempts, completed without a result.
        Log().created(dispatch=False, max_attempts=1)
        .add("cancelled", reason=None)
        .add("requeued", reason="resumed", attempt=0, retryAt=None, maxAttempts=2)
        .add("started", attempt=1, worker=None)
        .add("completed").events,
        # Refused: a work event while queued, an event after the end, a gap in seqs, another job's event.
        Log().created().add("progress", percent=5).events,
        Log().created().add("started", attempt=1, worker=None).add("completed", result=1).add("chunk", text="late").events,
        Log().created().raw({"jobId": "job-1", "seq": 3, "type": "started", "at": "2026-12-04T10:00:03.000Z", "data": {"attempt": 1, "worker": None}}).events,
        Log().created().raw({"jobId": "job-2", "seq": 2, "type": "started", "at": "2026-12-04T10:00:02.000Z", "data": {"attempt": 1, "worker": None}}).events,
        Log().add("started", attempt=1, worker=None).events,
    ]


def app_feature_logs() -> list[list[dict[str, Any]]]:
    """Stage plans, progress and item metadata, text rollback on resume, large values stored apart."""
    plan = [{"name": "validating", "from": 0, "to": 10}, {"name": "decoding", "from": 10, "to": 20}, {"name": "transcribing", "from": 20, "to": 90}, {"name": "aligning", "from": 90, "to": 100}]
    return [
        Log().add("created", type="t", input={"files": 2}, owner=None, dispatch=True, maxAttempts=3, plan=plan)
        .add("started", attempt=1, worker="w")
        .add("progress", stage="validating", fraction=0.5, metadata={"files": 3, "x": "y"})
        .add("progress", stage="transcribing", fraction=0.3333, metadata={"x": None, "n": [1, 2]})
        .add("progress", fraction=0.5)
        .add("progress", stage="unplanned", fraction=0.2)
        .add("item", id="a", metadata={"k": 1}).add("item", id="a", percent=3).add("item", id="a", metadata={"k": None, "j": True})
        .add("chunk", text="héllo 🎉 wörld")
        .add("checkpoint", data={"i": 1}, textLength=8)
        .add("chunk", text=" more 🎉")
        .add("requeued", reason="worker_lost", attempt=1, retryAt=None, textLength=8)
        .add("started", attempt=2, worker="w2")
        .add("progress", stage="decoding", fraction=0.125)
        .add("checkpoint", data=None, textLength=8, ref={"ref": "v1", "size": 70000})
        .add("checkpoint", data={"small": True})
        .add("completed", result=None, resultRef={"ref": "v2", "size": 900000}).events,
        # Failed in a stage, resumed from an earlier one, then cancelled in a later one.
        Log().add("created", type="t", input=None, owner=None, dispatch=True, maxAttempts=3, plan=plan)
        .add("started", attempt=1, worker="w")
        .add("progress", stage="decoding", fraction=0.5)
        .add("failed", code="boom", message="no", retryable=False)
        .add("requeued", reason="resumed", attempt=1, retryAt=None)
        .add("started", attempt=2, worker="w")
        .add("progress", stage="validating", fraction=0.5)
        .add("progress", stage="transcribing", fraction=0.25)
        .add("cancelled", reason=None).events,
    ]


def typescript_knows_app_features(tmp_path: Path) -> bool:
    """Whether @jobwire/protocol's reducer has stage plans (checked, so this test follows main as it grows)."""
    probe = Log().add("created", type="t", input=None, owner=None, dispatch=True, maxAttempts=1, plan=[{"name": "a", "from": 0, "to": 100}]).events
    return "plan" in typescript_states([probe], tmp_path)[0][0]


def typescript_states(logs: list[list[dict[str, Any]]], tmp_path: Path) -> list[list[dict[str, Any]]]:
    path = tmp_path / "logs.json"
    path.write_text(json.dumps(logs))
    # JOBWIRE_REDUCE_SCRIPT: another build's reduce.mjs (to check a branch's reducer before it lands).
    script = os.environ.get("JOBWIRE_REDUCE_SCRIPT", str(HERE / "reduce.mjs"))
    out = subprocess.run([node(), script, str(path)], capture_output=True, text=True, check=True)
    states: list[list[dict[str, Any]]] = json.loads(out.stdout)
    return states


def python_states(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = []
    state = None
    for event in log:
        try:
            state = apply_event(state, event)
            states.append(state)
        except ReducerError as error:
            states.append({"refused": str(error)})
            break
    return states


def assert_same_states(logs: list[list[dict[str, Any]]], tmp_path: Path) -> None:
    expected = typescript_states(logs, tmp_path)
    for index, log in enumerate(logs):
        got = python_states(log)
        assert len(got) == len(expected[index]), f"log {index}: the reducers stop at different events"
        for step, (mine, theirs) in enumerate(zip(got, expected[index])):
            if "refused" in theirs:
                assert "refused" in mine, f"log {index} event {step}: TypeScript refuses it ({theirs['refused']}), Python applies it"
            else:
                assert mine == theirs, f"log {index} event {step} ({log[step]['type']}): states differ"


def test_the_python_reducer_reaches_the_typescript_reducers_states_on_fixture_logs(tmp_path: Path) -> None:
    logs = fixture_logs()
    if typescript_knows_app_features(tmp_path):
        logs += app_feature_logs()
    assert_same_states(logs, tmp_path)


def test_the_python_reducer_reaches_the_typescript_reducers_states_on_logs_a_real_server_wrote(memory_server: Server, tmp_path: Path) -> None:
    server = memory_server
    logs: list[list[dict[str, Any]]] = []
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("import", input={"rows": 3}, owner={"tenant": "acme", "user": "ada"}, dispatch=False, max_attempts=2)
        backend.report(job["id"], [{"type": "progress", "stage": "reading", "percent": 20, "message": "rows"}])
        backend.report(job["id"], [{"type": "item", "id": "r1", "label": "Row 1"}, {"type": "item", "id": "r1", "status": "completed", "percent": 100}])
        backend.report(job["id"], [{"type": "chunk", "text": "row one\n"}, {"type": "checkpoint", "data": {"row": 1}}])
        backend.report(job["id"], [{"type": "failed", "code": "bad_row", "message": "row 2 is empty", "retryable": False}])
        backend.resume_job(job["id"])
        backend.report(job["id"], [{"type": "progress", "stage": "writing"}, {"type": "completed", "result": {"rows": 3}}])
        other = backend.create_job("import")
        backend.cancel_job(other["id"], reason="not needed")
        for job_id in (job["id"], other["id"]):
            answer = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", params={"after": "0"}, headers={"authorization": f"Bearer {server.api_key}"}).json()
            logs.append(answer["events"])
    assert len(logs[0]) >= 10
    assert_same_states(logs, tmp_path)


def test_the_error_registries_match_the_servers() -> None:
    out = subprocess.run([node(), str(HERE / "registry.mjs")], capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    mine = {code: {"status": spec.status, "retryable": spec.retryable, "message": spec.message} for code, spec in ERROR_REGISTRY.items()}
    assert mine == theirs["errors"]
    job_errors = {code: {"retryable": spec.retryable, "message": spec.message} for code, spec in JOB_ERROR_REGISTRY.items()}
    assert job_errors == theirs["jobErrors"]


def test_offline_tokens_are_minted_like_jobwire_backends(tmp_path: Path) -> None:
    secret = "s" * 40
    cases: list[dict[str, Any]] = [
        {"secret": secret, "jobIds": ["job_a", "job_b"], "now": 1_796_000_000_123},
        {"secret": secret, "tenant": "acme", "user": "ada", "rights": ["read", "cancel"], "ttlSeconds": 100_000, "now": 1_796_000_000_999},
    ]
    path = tmp_path / "mint.json"
    path.write_text(json.dumps(cases))
    theirs = json.loads(subprocess.run([node(), str(HERE / "mint.mjs"), str(path)], capture_output=True, text=True, check=True).stdout)
    mine = [
        mint_subscription_token(secret, job_ids=["job_a", "job_b"], now=1_796_000_000.123),
        mint_subscription_token(secret, tenant="acme", user="ada", rights=("read", "cancel"), ttl_seconds=100_000, now=1_796_000_000.999),
    ]

    def parts(token: str) -> tuple[Any, Any]:
        header, payload, _ = token.split(".")
        decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
        body = decode(payload)
        assert len(base64.urlsafe_b64decode(body.pop("jti") + "==")) == 12  # random per token
        # Items in order: the same keys in the same order make the same signed bytes.
        return list(decode(header).items()), list(body.items())

    for one, other in zip(mine, theirs):
        assert one.expires_at == other["expiresAt"]
        assert parts(one.token) == parts(other["token"])
