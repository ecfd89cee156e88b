"""The reducer: a job's state is a pure function of its events.

A transcription of ``packages/protocol/src/reducer.ts`` and its state machine
(``lifecycle.ts``); a conformance test feeds both the same event logs and compares the states. States
and events are the wire's JSON objects (camelCase keys), so a state from here compares equal to a
snapshot from the server.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable

JobState = dict[str, Any]
"""A job's state as the server sends it in snapshots (``id``, ``status``, ``progress``, ``text``…)."""

JobEvent = dict[str, Any]
"""One stored event: ``{"jobId", "seq", "type", "at", "data"}``."""

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

# Which event may follow which status, and the status it leads to; work events keep the status they find.
_TRANSITIONS: dict[str, dict[str, str]] = {
    "queued": {"started": "running", "failed": "failed", "cancelled": "cancelled"},
    "running": {
        "progress": "running",
        "item": "running",
        "chunk": "running",
        "checkpoint": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
        "requeued": "queued",
    },
    "completed": {},
    "failed": {"requeued": "queued"},
    "cancelled": {"requeued": "queued"},
}


class ReducerError(ValueError):
    """An event that does not belong: another job's, a seq that is not the next, a refused transition."""


STAGE_HISTORY_LIMIT = 100
"""How many stage changes a job's ``stages`` timeline keeps: the most recent ones."""

def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def next_status(status: str, event_type: str) -> str | None:
    """The status after ``event_type`` is applied to a job in ``status``; ``None`` when refused."""
    return _TRANSITIONS.get(status, {}).get(event_type)


def apply_event(state: JobState | None, event: JobEvent) -> JobState:
    """The state after ``event``. Never mutates ``state``; raises :class:`ReducerError` when the event does not belong."""
    if event["type"] == "created":
        if state is not None:
            raise ReducerError(f"job {event['jobId']}: created applied twice")
        data = event["data"]
        created: JobState = {
            "id": event["jobId"],
            "type": data["type"],
            "owner": copy.deepcopy(data["owner"]),
            "input": copy.deepcopy(data.get("input")),
            "status": "queued",
            "progress": {"stage": None, "percent": None, "message": None},
            "stages": [],
            "items": [],
            "text": "",
            "checkpoint": None,
            "result": None,
            "error": None,
            "attempt": 0,
            "maxAttempts": data["maxAttempts"],
            "dispatch": data["dispatch"],
            "worker": None,
            "queuePosition": None,
            "createdAt": event["at"],
            "startedAt": None,
            "finishedAt": None,
            "updatedAt": event["at"],
            "seq": event["seq"],
        }
        if "input" not in data:
            del created["input"]
        if data.get("plan") is not None:
            created["plan"] = [{**stage, "status": "pending", "fraction": None} for stage in data["plan"]]
        return created
    if state is None:
        raise ReducerError(f"job {event['jobId']}: {event['type']} before created")
    status = _admit(state, event)
    nxt = dict(state)
    _apply_to(nxt, status, event)
    return nxt


def reduce_events(events: Iterable[JobEvent], state: JobState | None = None) -> JobState | None:
    """Folds a log (from ``created``, or continuing ``state``) into the job's state."""
    current = state
    for event in events:
        current = apply_event(current, event)
    return current


def _admit(state: JobState, event: JobEvent) -> str:
    if event["jobId"] != state["id"]:
        raise ReducerError(f"event of job {event['jobId']} applied to job {state['id']}")
    if event["seq"] != state["seq"] + 1:
        raise ReducerError(f"job {state['id']}: seq {event['seq']} follows {state['seq']}")
    status = next_status(state["status"], event["type"])
    if status is None:
        raise ReducerError(f"job {state['id']}: {event['type']} is not allowed while {state['status']}")
    return status


def _apply_to(nxt: JobState, status: str, event: JobEvent) -> None:
    """Sets top-level fields of ``nxt`` (a fresh copy); replaces, never changes, the objects they hold."""
    nxt["status"] = status
    nxt["seq"] = event["seq"]
    nxt["updatedAt"] = event["at"]
    kind = event["type"]
    data: dict[str, Any] = event["data"]
    if kind == "started":
        nxt["attempt"] = data["attempt"]
        _copy_field(nxt, "worker", data, "worker")
        nxt["startedAt"] = event["at"]
        nxt["error"] = None
        nxt["queuePosition"] = None
    elif kind == "progress":
        before = nxt["progress"]
        stage = data.get("stage")
        stage_changed = stage is not None and stage != before["stage"]
        current = stage if stage is not None else before["stage"]
        percent = data.get("percent")
        message = data.get("message")
        fraction = data.get("fraction")
        # With a plan, entering a planned stage or reporting its fraction moves the overall percent.
        planned: float | None = None
        if nxt.get("plan") is not None and current is not None and (stage_changed or fraction is not None):
            reached = fraction if fraction is not None else 0
            plan = _advance_plan(nxt["plan"], current, reached)
            entry = next((one for one in plan or [] if one["name"] == current), None)
            if plan is not None and entry is not None:
                nxt["plan"] = plan
                planned = _plan_percent(entry, reached)
        progress: dict[str, Any] = {
            "stage": current,
            "percent": percent if percent is not None else planned if planned is not None else (None if stage_changed else before["percent"]),
            "message": message if message is not None else (None if stage_changed else before["message"]),
        }
        if data.get("metadata") is not None:
            progress["metadata"] = _merge_metadata(before.get("metadata"), data["metadata"])
        elif before.get("metadata") is not None:
            progress["metadata"] = before["metadata"]
        nxt["progress"] = progress
        if stage_changed:
            # The timeline keeps the last STAGE_HISTORY_LIMIT changes, as the server's reducer does.
            kept = nxt["stages"][len(nxt["stages"]) - STAGE_HISTORY_LIMIT + 1 :] if len(nxt["stages"]) >= STAGE_HISTORY_LIMIT else nxt["stages"]
            nxt["stages"] = [*kept, {"stage": stage, "at": event["at"]}]
    elif kind == "item":
        nxt["items"] = _upsert_item(nxt["items"], data, event["at"])
    elif kind == "chunk":
        nxt["text"] = nxt["text"] + data["text"]
    elif kind == "checkpoint":
        _copy_field(nxt, "checkpoint", data, "data")
        if data.get("textLength") is not None:
            nxt["checkpointTextLength"] = data["textLength"]
        # A checkpoint too large for an event is stored apart: the event carries its ref, `data` is null.
        if data.get("ref") is not None:
            nxt["checkpointRef"] = copy.deepcopy(data["ref"])
        else:
            nxt.pop("checkpointRef", None)
    elif kind == "completed":
        _copy_field(nxt, "result", data, "result")
        if data.get("resultRef") is not None:
            nxt["resultRef"] = copy.deepcopy(data["resultRef"])
        nxt["finishedAt"] = event["at"]
        nxt["progress"] = {**nxt["progress"], "percent": 100}
        if nxt.get("plan") is not None:
            nxt["plan"] = _finish_plan(nxt["plan"])
        nxt["queuePosition"] = None
    elif kind == "failed":
        nxt["error"] = dict(data)
        nxt["finishedAt"] = event["at"]
        if nxt.get("plan") is not None:
            nxt["plan"] = _stop_plan(nxt["plan"], "failed")
        nxt["queuePosition"] = None
    elif kind == "cancelled":
        nxt["finishedAt"] = event["at"]
        if nxt.get("plan") is not None:
            nxt["plan"] = _stop_plan(nxt["plan"], "cancelled")
        nxt["queuePosition"] = None
    elif kind == "requeued":
        nxt["worker"] = None
        nxt["finishedAt"] = None
        nxt["result"] = None
        error = data.get("error")
        nxt["error"] = None if error is None else {**error, "retryable": True}
        max_attempts = data.get("maxAttempts")
        if max_attempts is not None:
            nxt["maxAttempts"] = max_attempts
        if data.get("counted") is False:
            # No handler ran that attempt: the next start takes its number again.
            nxt["attempt"] = max(0, data["attempt"] - 1)
        if data.get("textLength") is not None:
            # Back to what the checkpoint the next attempt resumes from held, so text is not repeated.
            nxt["text"] = _utf16_prefix(nxt["text"], data["textLength"])
    else:
        raise ReducerError(f"job {nxt['id']}: unknown event type {kind!r}")


def _copy_field(nxt: JobState, key: str, data: dict[str, Any], field: str) -> None:
    """``nxt[key] = data[field]``; a field the event lacks leaves no key, as JSON leaves out TypeScript's ``undefined``."""
    if field in data:
        nxt[key] = copy.deepcopy(data[field])
    else:
        nxt.pop(key, None)


def _upsert_item(items: list[dict[str, Any]], data: dict[str, Any], at: str) -> list[dict[str, Any]]:
    index = next((i for i, item in enumerate(items) if item["id"] == data["id"]), -1)
    previous: dict[str, Any] = items[index] if index != -1 else {}

    def pick(key: str, default: Any) -> Any:
        value = data.get(key)
        if value is not None:
            return value
        before = previous.get(key)
        return before if before is not None else default

    nxt: dict[str, Any] = {
        "id": data["id"],
        "label": pick("label", None),
        "status": pick("status", "running"),
        "percent": pick("percent", None),
        "message": pick("message", None),
        "updatedAt": at,
    }
    if data.get("metadata") is not None:
        nxt["metadata"] = _merge_metadata(previous.get("metadata"), data["metadata"])
    elif previous.get("metadata") is not None:
        nxt["metadata"] = previous["metadata"]
    if index == -1:
        return [*items, nxt]
    copied = list(items)
    copied[index] = nxt
    return copied


def _merge_metadata(current: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``current``: its keys win, and a key it sets to ``None`` is removed."""
    merged = dict(current or {})
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _advance_plan(plan: list[dict[str, Any]], stage: str, fraction: float) -> list[dict[str, Any]] | None:
    """Earlier stages that ran are done, those never started skipped; later ones pending again. ``None`` for an unplanned stage."""
    index = next((i for i, entry in enumerate(plan) if entry["name"] == stage), -1)
    if index == -1:
        return None
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(plan):
        if i < index:
            if entry["status"] in ("running", "failed", "cancelled"):
                entry = {**entry, "status": "done", "fraction": 1}
            elif entry["status"] == "pending":
                entry = {**entry, "status": "skipped"}
        elif i == index:
            entry = {**entry, "status": "running", "fraction": fraction}
        elif entry["status"] != "pending":
            entry = {**entry, "status": "pending", "fraction": None}
        out.append(entry)
    return out


def _finish_plan(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in plan:
        if entry["status"] == "running":
            entry = {**entry, "status": "done", "fraction": 1}
        elif entry["status"] == "pending":
            entry = {**entry, "status": "skipped"}
        out.append(entry)
    return out


def _stop_plan(plan: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    """A failed or cancelled job's plan: the stage it was in says so; the others stay (a resume may run them)."""
    return [{**entry, "status": status} if entry["status"] == "running" else entry for entry in plan]


def _plan_percent(stage: dict[str, Any], fraction: float) -> float:
    return _round(stage["from"] + (stage["to"] - stage["from"]) * fraction)


def _round(value: float) -> float:
    # JavaScript's Math.round(value * 1000) / 1000: halves go up, not to even.
    return math.floor(value * 1000 + 0.5) / 1000


def _utf16_prefix(text: str, length: int) -> str:
    """The first ``length`` UTF-16 code units of ``text``: JavaScript's ``text.slice(0, length)``."""
    if text.isascii():
        return text[:length]
    return text.encode("utf-16-le", "surrogatepass")[: 2 * length].decode("utf-16-le", "surrogatepass")
