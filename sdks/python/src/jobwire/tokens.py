"""Offline subscription tokens and webhook signatures: no network hop, the same bytes as the server's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Sequence

Right = Literal["read", "cancel"]


@dataclass(frozen=True)
class SubscriptionToken:
    token: str
    """Give it to a browser (``?access_token=…``) or a watcher."""
    expires_at: str
    """ISO 8601, UTC."""


def mint_subscription_token(
    secret: str,
    *,
    job_ids: Sequence[str] | None = None,
    tenant: str | None = None,
    user: str | None = None,
    rights: Sequence[Right] = ("read",),
    ttl_seconds: int = 900,
    now: float | None = None,
) -> SubscriptionToken:
    """Mints a subscription token locally: an HS256 JWT the server verifies with ``--token-secret``.

    Give ``job_ids``, or ``tenant`` and ``user`` (every job of that user, including later ones).
    ``ttl_seconds`` defaults to 900 and is capped at 86,400. Mint only for jobs and users your own
    auth has checked the caller may see.
    """
    if len(secret) < 32:
        raise ValueError("mint_subscription_token: secret must be at least 32 characters")
    if job_ids is None and user is None:
        raise ValueError("mint_subscription_token: give job_ids, or tenant and user")
    if user is not None and tenant is None:
        raise ValueError("mint_subscription_token: user needs tenant")
    ttl = min(ttl_seconds, 86_400)
    iat = int((time.time() if now is None else now) // 1)
    payload: dict[str, Any] = {
        "iss": "jobwire",
        "aud": "jobwire:subscription",
        "iat": iat,
        "exp": iat + ttl,
        "jti": _b64url(secrets.token_bytes(12)),
        "rights": list(rights),
    }
    if job_ids is not None:
        payload["jobs"] = list(job_ids)
    if tenant is not None:
        payload["tenant"] = tenant
    if user is not None:
        payload["user"] = user
    signing_input = f"{_b64url(_json({'alg': 'HS256', 'typ': 'JWT'}))}.{_b64url(_json(payload))}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    expires = datetime.fromtimestamp(iat + ttl, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return SubscriptionToken(f"{signing_input}.{_b64url(signature)}", expires)


def webhook_signature(secret: str, timestamp: int, body: str | bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``: the ``x-jobwire-signature`` header."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSignatureError(ValueError):
    """The ``x-jobwire-signature`` header is missing, malformed, wrong, or too old."""


def verify_webhook(secret: str, body: str | bytes, signature: str | None, *, tolerance_seconds: int = 300, now: float | None = None) -> Any:
    """Checks a webhook delivery and returns its parsed payload (``{"id", "type", "job", "event"}``).

    ``body`` must be the raw request body as received, ``signature`` the ``x-jobwire-signature``
    header. Refuses (:class:`WebhookSignatureError`) a wrong signature, or a timestamp more than
    ``tolerance_seconds`` (default 300) away from now, so a captured delivery cannot be replayed
    later. Deliveries are at least once: drop repeats by the payload's ``id``.
    """
    if not signature:
        raise WebhookSignatureError("missing x-jobwire-signature header")
    parts = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
    stamp = parts.get("t", "")
    given = parts.get("v1")
    if not stamp.isdigit() or given is None:
        raise WebhookSignatureError("malformed x-jobwire-signature header")
    timestamp = int(stamp)
    expected = webhook_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected, f"t={timestamp},v1={given}"):
        raise WebhookSignatureError("signature mismatch")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(f"timestamp {timestamp} is more than {tolerance_seconds} s from now")
    return json.loads(body)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
