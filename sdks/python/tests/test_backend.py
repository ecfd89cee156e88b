"""The backend client against a real server: create, get, list, cancel, resume, report, tokens, errors."""

from __future__ import annotations

import asyncio
import http.server
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import TOKEN_SECRET, WEBHOOK_SECRET, Server, start_server, stop_server
from jobwire import (
    AsyncBackend,
    AuthenticationError,
    Backend,
    ConflictError,
    InvalidRequestError,
    JobwireError,
    NotFoundError,
    WebhookSignatureError,
    mint_subscription_token,
    verify_webhook,
    webhook_signature,
)

OWNER = {"tenant": "acme", "user": "ada"}


def test_creates_a_job_once_per_idempotency_key_and_reads_it_back(server: Server) -> None:
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("transcription", input={"files": ["a.mp3"]}, owner=OWNER, idempotency_key="upload-1", max_attempts=2)
        again = backend.create_job("transcription", input={"files": ["other.mp3"]}, owner=OWNER, idempotency_key="upload-1")
        assert again["id"] == job["id"]
        assert again["input"] == {"files": ["a.mp3"]}
        got = backend.get_job(job["id"])
        assert (got["status"], got["owner"], got["maxAttempts"], got["dispatch"]) == ("queued", OWNER, 2, True)
        page = backend.list_jobs(type="transcription", tenant="acme", limit=10)
        assert [summary["id"] for summary in page["jobs"]] == [job["id"]]


def test_a_self_run_job_is_reported_on_cancelled_and_resumed(server: Server) -> None:
    with Backend(server.url, server.api_key) as backend:
        job = backend.create_job("import", owner=OWNER, dispatch=False)
        answer = backend.report(job["id"], [{"type": "progress", "stage": "reading", "percent": 10}, {"type": "checkpoint", "data": {"row": 40}}])
        # The server starts a queued job implicitly before the first work event.
        assert [event["type"] for event in answer["events"]] == ["started", "progress", "checkpoint"]
        cancelled = backend.cancel_job(job["id"], reason="user asked")
        assert cancelled["status"] == "cancelled"
        with pytest.raises(ConflictError) as refused:
            backend.report(job["id"], [{"type": "progress", "percent": 50}])
        assert refused.value.code == "job_finished" and refused.value.status == 409
        resumed = backend.resume_job(job["id"])
        assert resumed["status"] == "queued" and resumed["checkpoint"] == {"row": 40}


def test_report_many_answers_each_write_on_its_own(server: Server) -> None:
    with Backend(server.url, server.api_key) as backend:
        first = backend.create_job("import", dispatch=False)
        results = backend.report_many([
            {"jobId": first["id"], "events": [{"type": "chunk", "text": "hello"}]},
            {"jobId": "no-such-job", "events": [{"type": "chunk", "text": "lost"}]},
        ])
        ok, missing = results
        assert isinstance(ok, dict) and ok["status"] == "running"
        assert isinstance(missing, NotFoundError) and missing.code == "job_not_found"


def test_errors_are_typed_and_carry_the_registry_code(memory_server: Server) -> None:
    with Backend(memory_server.url, memory_server.api_key) as backend:
        with pytest.raises(NotFoundError) as missing:
            backend.get_job("does-not-exist")
        assert missing.value.code == "job_not_found" and missing.value.status == 404 and not missing.value.retryable
        with pytest.raises(InvalidRequestError) as invalid:
            backend.create_job("bad type with spaces")
        assert invalid.value.code == "invalid_request" and invalid.value.details is not None
    with Backend(memory_server.url, "wrong-key-wrong-key-wrong") as stranger:
        with pytest.raises(AuthenticationError) as refused:
            stranger.get_job("x")
        assert refused.value.code == "unauthorized"


def test_async_backend_creates_and_cancels(memory_server: Server) -> None:
    async def scenario() -> None:
        async with AsyncBackend(memory_server.url, memory_server.api_key) as backend:
            job = await backend.create_job("render", input={"frames": 3}, owner=OWNER)
            assert (await backend.cancel_job(job["id"]))["status"] == "cancelled"
            with pytest.raises(JobwireError) as missing:
                await backend.get_job("nope")
            assert missing.value.code == "job_not_found"

    asyncio.run(scenario())


def test_an_offline_token_is_accepted_by_the_server_like_an_online_one(memory_server: Server) -> None:
    with Backend(memory_server.url, memory_server.api_key) as backend:
        job = backend.create_job("render", owner=OWNER)
        other = backend.create_job("render", owner={"tenant": "acme", "user": "bob"})
        online = backend.mint_token(job_ids=[job["id"]], tenant="acme")
        offline = mint_subscription_token(TOKEN_SECRET, job_ids=[job["id"]], ttl_seconds=60)
        by_user = mint_subscription_token(TOKEN_SECRET, tenant="acme", user="ada", rights=("read", "cancel"))
        for token in (online["token"], offline.token, by_user.token):
            with Backend(memory_server.url, token) as viewer:
                assert viewer.get_job(job["id"])["id"] == job["id"]
                # Another user's job is invisible to these tokens: not found, not forbidden.
                with pytest.raises(NotFoundError):
                    viewer.get_job(other["id"])
        with Backend(memory_server.url, by_user.token) as viewer:
            assert viewer.cancel_job(job["id"])["status"] == "cancelled"
        forged = mint_subscription_token("x" * 40, job_ids=[job["id"]])
        with Backend(memory_server.url, forged.token) as viewer, pytest.raises(AuthenticationError) as refused:
            viewer.get_job(job["id"])
        assert refused.value.code == "invalid_token"


def test_offline_tokens_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        mint_subscription_token("short", job_ids=["a"])
    with pytest.raises(ValueError, match="job_ids, or tenant and user"):
        mint_subscription_token(TOKEN_SECRET)
    with pytest.raises(ValueError, match="user needs tenant"):
        mint_subscription_token(TOKEN_SECRET, user="ada")
    token = mint_subscription_token(TOKEN_SECRET, job_ids=["a"], ttl_seconds=10**6, now=1_000_000)
    # The lifetime is capped at 86,400 s: 1,000,000 + 86,400 s after the epoch.
    assert token.expires_at == "1970-01-13T13:46:40.000Z"


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, "queue.Queue[tuple[bytes, dict[str, str]]]"]]:
    received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — the stdlib's name
            body = self.rfile.read(int(self.headers["content-length"]))
            received.put((body, {key.lower(): value for key, value in self.headers.items()}))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    httpd.shutdown()


def test_verifies_the_signature_of_a_real_webhook_delivery(tmp_path: Path, webhook_receiver: tuple[str, "queue.Queue[tuple[bytes, dict[str, str]]]"]) -> None:
    url, received = webhook_receiver
    server = start_server("memory", tmp_path, "--webhooks", f"*={url}", "--webhook-secret", WEBHOOK_SECRET)
    try:
        with Backend(server.url, server.api_key) as backend:
            job = backend.create_job("render", dispatch=False)
            backend.report(job["id"], [{"type": "completed", "result": {"frames": 3}}])
        body, headers = received.get(timeout=30)
        payload = verify_webhook(WEBHOOK_SECRET, body, headers["x-jobwire-signature"])
        assert payload["type"] == "job.completed" and payload["job"]["id"] == job["id"]
        assert payload["job"]["result"] == {"frames": 3}
        with pytest.raises(WebhookSignatureError, match="mismatch"):
            verify_webhook(WEBHOOK_SECRET, body + b" ", headers["x-jobwire-signature"])
        with pytest.raises(WebhookSignatureError, match="mismatch"):
            verify_webhook("y" * 40, body, headers["x-jobwire-signature"])
        stale = webhook_signature(WEBHOOK_SECRET, int(time.time()) - 3_600, body)
        with pytest.raises(WebhookSignatureError, match="from now"):
            verify_webhook(WEBHOOK_SECRET, body, stale)
        with pytest.raises(WebhookSignatureError, match="missing"):
            verify_webhook(WEBHOOK_SECRET, body, None)
    finally:
        stop_server(server)


def test_an_unreachable_server_is_a_connection_error() -> None:
    with Backend("http://127.0.0.1:9", "k" * 20, timeout=5) as backend, pytest.raises(JobwireError) as failed:
        backend.get_job("x")
    assert failed.value.code == "network_error" and failed.value.retryable
    assert "(http://127.0.0.1:9)" in str(failed.value)  # where it could not get to
    assert isinstance(failed.value.__cause__, httpx.HTTPError)
    assert json.dumps(failed.value.code)
