"""A transcription worker in Python: stages, per-file progress, a live transcript, checkpoints.

It simulates the work (no audio libraries needed) at the pace of a real one, so the dashboard has
something to show: `python worker.py --create 3` creates three jobs and runs them; kill it mid-job
and start it again, and each job resumes from the last file it finished.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any

from jobwire import Backend, InvalidRequestError, SyncJobContext, Worker

JOB_TYPE = "example-python-transcription"
# The stages of one job, and the share of the work each takes (validating 0–10 %, decoding 10–20 %…).
STAGES = [("validating", 0, 10), ("decoding", 10, 20), ("transcribing", 20, 90), ("aligning", 90, 100)]
# JOBWIRE_EXAMPLE_PACE scales the simulated work's waits (the tests run it at 0.02).
PACE = float(os.environ.get("JOBWIRE_EXAMPLE_PACE", "1"))
WORDS = "the quick brown fox jumps over the lazy dog while the band plays on and the crowd sings along".split()


def transcribe(job: dict[str, Any], ctx: SyncJobContext) -> dict[str, Any]:
    """A plain `def` handler: it runs in a worker thread, so blocking libraries (whisper, ffmpeg) fit."""
    files: list[str] = job["input"]["files"]
    # Resume: the files a previous attempt finished are kept, not done again.
    done: list[str] = (ctx.checkpoint_data or {}).get("done", [])
    rng = random.Random(job["id"])
    for file in files:
        ctx.item(file, label=file, status="completed" if file in done else "pending")

    # With a stage plan (declared at create, on servers that have them) the server computes the
    # overall percent from each stage's fraction; without one, the worker reports the percent itself.
    planned = job.get("plan") is not None
    for stage, start, end in STAGES:
        if planned:
            ctx.stage(stage, 0)
            ctx.progress(message=f"{stage.capitalize()} {len(files)} files")
        else:
            ctx.progress(stage=stage, percent=start, message=f"{stage.capitalize()} {len(files)} files")
        todo = [file for file in files if file not in done] if stage == "transcribing" else files
        for index, file in enumerate(todo):
            ctx.item(file, status="running", percent=0, message=stage)
            steps = 10 if stage == "transcribing" else 2
            for step in range(1, steps + 1):
                # A cancellable sleep: it returns at once when the job is cancelled or the worker stops.
                if ctx.cancel_event.wait(rng.uniform(0.1, 0.4) * PACE):
                    ctx.raise_if_cancelled()
                if stage == "transcribing":
                    ctx.chunk(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + (".\n" if step == steps else " "))
                ctx.item(file, percent=100 * step / steps)
                done_share = (index + step / steps) / max(1, len(todo))
                if planned:
                    ctx.progress(fraction=done_share, metadata={"file": file, "filesDone": len(done)})
                else:
                    ctx.progress(percent=round(start + (end - start) * done_share, 1))
            if stage == "transcribing":
                done.append(file)
                ctx.item(file, status="completed", percent=100, message="transcribed")
                # Durable before the next file starts: a restarted worker picks up from here.
                ctx.checkpoint({"done": done})
            else:
                ctx.item(file, status="completed" if stage == "aligning" or file in done else "pending", message=f"{stage} done")
    return {"files": len(files), "words": sum(len(file) for file in files) * 37}


def create(backend: Backend, files: list[str]) -> dict[str, Any]:
    """Creates a job with its stage plan, or without one on a server that has no stage plans."""
    # Owned by tenant `demo`, user `demo`: the dashboard's one-click demo sign-in sees them.
    owner = {"tenant": "demo", "user": "demo"}
    plan = [{"name": name, "from": start, "to": end} for name, start, end in STAGES]
    try:
        return backend.create_job(JOB_TYPE, input={"files": files}, owner=owner, stages=plan)
    except InvalidRequestError as error:
        if (error.details or {}).get("field") != "stages":
            raise
        return backend.create_job(JOB_TYPE, input={"files": files}, owner=owner)


def admin_key() -> str:
    key = os.environ.get("JOBWIRE_API_KEY")
    if key:
        return key
    # `jobwire serve` saves its generated admin key here, in the directory it was started from.
    for folder in (Path.cwd(), *Path.cwd().parents):
        saved = folder / ".jobwire" / "admin.key"
        if saved.exists():
            return saved.read_text().strip()
    sys.exit("Set JOBWIRE_API_KEY (the admin key `jobwire serve` printed), or run from where it saved .jobwire/admin.key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("JOBWIRE_URL", "http://127.0.0.1:7070"))
    parser.add_argument("--create", type=int, default=0, metavar="N", help="create N jobs first (owned by the demo user)")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    key = admin_key()

    if args.create:
        with Backend(args.url, key) as backend:
            for n in range(args.create):
                files = [f"episode-{n + 1}-part-{part}.mp3" for part in range(1, 4)]
                job = create(backend, files)
                print(f"created {job['id']}: {args.url}/#/jobs/{job['id']}", flush=True)

    worker = Worker(args.url, key, concurrency=args.concurrency)
    worker.handle(JOB_TYPE, transcribe)
    print(f"worker {worker.name} running {JOB_TYPE} jobs (Ctrl-C stops it; its jobs go back to the queue)", flush=True)
    worker.run(stop_timeout=5)


if __name__ == "__main__":
    main()
