"""The deep path end to end: a real Celery deep worker analyses 1080p frames from PostgreSQL.

    .venv/bin/python bench/deep_worker.py [--events 240] [--batch 10]

Prints ONE JSON line (progress goes to stderr). Starts its own embedded Redis and
PostgreSQL under var/bench-deep/, writes ``--events`` queued events whose frames are
1920x1080 JPEGs (the five test photos, resized), half as uploaded bytes in the row and half
as URLs on a local HTTP server (another process), then for each run starts the deep worker
exactly as ``tasks/gpu_workers.py`` does (one process, ``--pool threads``,
``DEEP_TASK_THREADS`` tasks at once), sends every event as deep tasks of ``--batch``
events at once (a backlog) and waits until PostgreSQL holds every outcome. Runs:

- ``devicesim`` on 2 cores and on 1 core (``taskset``): the model is a stand-in that costs
  3 ms + 0.05 ms per frame per batch and sleeps meanwhile (``inference/devicesim.py``), as
  a fast GPU would; what is left is host work. ``host_cpu_ms_per_event`` is the worker
  process's CPU time (user + system, from /proc) over the run, per event.
- ``nanodet``: the real detector on this CPU (its CPU time is mostly inference).

The baseline, in the same run on the same frames, is the host work of the code path the
device batcher replaced, in this process and timed with its CPU clock: full-size decode
(fetching the URL ones), letterbox, drawing on the full frame, shrinking to 960 and
encoding. It leaves out that path's per-event SQL and Celery costs, which the worker's own
figure includes, so the comparison favours the baseline.

Device batch figures come from the worker's metrics (``metrics:workers`` in Redis):
``mean_device_batch`` is frames over batches, ``batch_wait_p99_ms`` the upper bound of the
histogram bucket holding the 99th percentile of how long a batch's first frame waited.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from PIL import Image  # noqa: E402

from bench.stack import fresh_servers, stack_env  # noqa: E402
from demo.processes import ROOT, Child, stop_all  # noqa: E402
from demo.static import LOOPBACK_NETWORK  # noqa: E402
from devservers._process import free_port  # noqa: E402
from store.db import create_pool  # noqa: E402

BASE_DIR = ROOT / "var" / "bench-deep"
PHOTOS = ROOT / "tests" / "data" / "photos"
TIER = "premium"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def frames(directory: Path) -> list[bytes]:
    """The test photos as 1920x1080 JPEGs (quality 90), also written to ``directory``."""
    out = []
    directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(PHOTOS.glob("*.jpg")):
        with Image.open(path) as im:
            frame = im.convert("RGB").resize((1920, 1080), Image.Resampling.BILINEAR)
        target = directory / path.name
        frame.save(target, format="JPEG", quality=90)
        out.append(target.read_bytes())
    return out


def write_events(database_url: str, blobs: list[bytes], names: list[str], base: str, n: int):
    """``n`` queued events of one home: even ones carry the bytes, odd ones a URL."""
    pool = create_pool(database_url, min_size=1, max_size=2)
    with pool.connection() as conn:
        conn.execute("TRUNCATE users, homes, devices, events RESTART IDENTITY CASCADE")
        user = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('bench@vigil', 'x') RETURNING id"
        ).fetchone()["id"]
        home = conn.execute(
            "INSERT INTO homes (owner_id, name, tier, arm_mode) VALUES (%s, 'Bench', %s, 'away')"
            " RETURNING id",
            (user, TIER),
        ).fetchone()["id"]
        camera = conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera',"
            " 'camera', 'cam') RETURNING id",
            (home,),
        ).fetchone()["id"]
        ids = []
        for i in range(n):
            k = i % len(blobs)
            image, url = (blobs[k], None) if i % 2 == 0 else (None, f"{base}/{names[k]}")
            ids.append(
                conn.execute(
                    "INSERT INTO events (home_id, device_id, location, mode, motion_score,"
                    " image, image_url) VALUES (%s, %s, 'front_door', 'security', 0.8, %s, %s)"
                    " RETURNING id",
                    (home, camera, image, url),
                ).fetchone()["id"]
            )
    pool.close()
    return ids


def settled(database_url: str) -> tuple[int, int, int]:
    """(analysed, failed, still queued or processing)."""
    pool = create_pool(database_url, min_size=1, max_size=1)
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'analyzed') AS a,"
            " count(*) FILTER (WHERE status = 'failed') AS f,"
            " count(*) FILTER (WHERE status IN ('queued', 'processing')) AS w FROM events"
        ).fetchone()
    pool.close()
    return row["a"], row["f"], row["w"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def worker_metrics(client: redis.Redis) -> dict[str, Any]:
    """Device batches from the worker's metrics: frames, batches, the wait histogram."""
    frames_n, batches, waits = 0.0, 0.0, {}
    for name, value in client.hgetall("metrics:workers").items():
        family, _labels, part = json.loads(name)
        if family == "vigil_device_frames":
            frames_n += float(value)
        elif family == "vigil_inference_batch_seconds" and part not in ("sum", ""):
            batches += float(value)
        elif family == "vigil_device_batch_wait_seconds" and part not in ("sum", ""):
            waits[float(part)] = waits.get(float(part), 0.0) + float(value)
    p99 = None
    total, seen = sum(waits.values()), 0.0
    for bound in sorted(waits):
        seen += waits[bound]
        if total and seen >= 0.99 * total:
            p99 = bound
            break
    return {"frames": frames_n, "batches": batches, "wait_p99_bound_s": p99}


def run(env: dict[str, str], mode: str, cores: str, ids: list[int], batch: int, log_dir: Path):
    """Start the deep worker, send every event, wait for every outcome; the run's figures."""
    from tasks.deep import deep_batch
    from tasks.gpu_workers import worker_command
    from tasks.queues import deep_queue

    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    client.flushdb()
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    broker.flushdb()
    pool = create_pool(env["DATABASE_URL"], min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.execute("UPDATE events SET status = 'queued', attempts = 0, snapshot = NULL")
        conn.execute("DELETE FROM detections")
    pool.close()
    worker_env = dict(env, DEEP_MODEL=mode, VIGIL_WORKER_ROLE="deep", CUDA_VISIBLE_DEVICES="")
    threads = int(worker_env.get("DEEP_TASK_THREADS", "4"))
    cmd = ["taskset", "-c", cores, *worker_command(f"bench-{mode}", threads)]
    worker = Child(f"deep-{mode}-{cores}", cmd, env=worker_env, log_dir=log_dir)
    try:
        worker.wait_for_log("deep model", 180)
        worker.wait_for_log("ready.", 60)
        cpu_before, started = cpu_seconds(worker.proc.pid), time.perf_counter()
        for start in range(0, len(ids), batch):
            deep_batch.apply_async((TIER, ids[start : start + batch]), queue=deep_queue(TIER))
        deadline = started + 600
        while True:
            analysed, failed, waiting = settled(env["DATABASE_URL"])
            if not waiting:
                break
            if time.perf_counter() > deadline:
                log(f"{mode}: {waiting} events still waiting after 600 s")
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(worker.proc.pid) - cpu_before
        time.sleep(1.0)  # the last task's metrics flush
        device = worker_metrics(client)
    finally:
        stop_all([worker])
        client.close()
        broker.close()
    return {
        "events_per_s": round(len(ids) / elapsed, 1),
        "host_cpu_ms_per_event": round(cpu * 1000.0 / len(ids), 2),
        "analysed": analysed,
        "failed": failed,
        "lost": waiting,
        "mean_device_batch": round(device["frames"] / device["batches"], 1)
        if device["batches"]
        else None,
        "batch_wait_p99_ms": None
        if device["wait_p99_bound_s"] is None
        else round(device["wait_p99_bound_s"] * 1000.0, 1),
        "elapsed_s": round(elapsed, 2),
    }


def baseline_cpu_ms(sources: list[Any]) -> float:
    """The replaced path's host work per frame, in this process: full decode (and fetch),
    letterbox, drawing on the full frame, shrink to 960, encode."""
    from inference.annotate import annotate
    from inference.fetch import load_source
    from inference.images import encode_jpeg
    from inference.nanodet import letterbox

    started = time.process_time()
    for source in sources:
        image = load_source(source, allowed_networks=(LOOPBACK_NETWORK,))
        letterbox(image, (416, 416))
        drawn = annotate(image, [])
        drawn.thumbnail((960, 960))
        encode_jpeg(drawn, quality=85)
    return (time.process_time() - started) * 1000.0 / len(sources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=240)
    parser.add_argument("--batch", type=int, default=10, help="events per deep task")
    parser.add_argument("--skip-nanodet", action="store_true")
    args = parser.parse_args()

    servers = fresh_servers(BASE_DIR)
    children: list[Child] = []
    static = None
    try:
        urls = servers.start()
        env = stack_env(urls)
        os.environ.update(env)  # this process sends the tasks: its settings must agree
        frame_dir = BASE_DIR / "frames"
        blobs = frames(frame_dir)
        names = [p.name for p in sorted(frame_dir.glob("*.jpg"))]
        port = free_port()
        static = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=frame_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        time.sleep(1.0)
        ids = write_events(urls["DATABASE_URL"], blobs, names, base, args.events)
        sources = [
            blobs[i % len(blobs)] if i % 2 == 0 else f"{base}/{names[i % len(blobs)]}"
            for i in range(args.events)
        ]
        log(f"{args.events} events, 1920x1080, half bytes and half URLs")
        baseline = baseline_cpu_ms(sources)
        log(f"baseline host work: {baseline:.1f} ms CPU per event")
        log_dir = BASE_DIR / "logs"
        runs = {}
        for mode, cores in (("devicesim", "0,1"), ("devicesim", "0")):
            key = f"{mode}_{len(cores.split(','))}core"
            runs[key] = run(env, mode, cores, ids, args.batch, log_dir)
            log(f"{key}: {runs[key]}")
        if not args.skip_nanodet:
            runs["nanodet_2core"] = run(env, "nanodet", "0,1", ids, args.batch, log_dir)
            log(f"nanodet_2core: {runs['nanodet_2core']}")
        two, one = runs["devicesim_2core"], runs["devicesim_1core"]
        result = {
            "bench": "deep_worker",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, no GPU",
            "events": args.events,
            "frame": "1920x1080 JPEG q90, half uploaded bytes, half URLs on a local server",
            "deep_task_threads": int(env.get("DEEP_TASK_THREADS", "4")),
            "events_per_task": args.batch,
            "baseline_host_cpu_ms_per_event": round(baseline, 2),
            "host_cpu_ms_per_event": two["host_cpu_ms_per_event"],
            "events_per_s": {key: r["events_per_s"] for key, r in runs.items()},
            "mean_device_batch": two["mean_device_batch"],
            "batch_wait_p99_ms": two["batch_wait_p99_ms"],
            "devicesim_scaling_2v1": round(two["events_per_s"] / one["events_per_s"], 2),
            "lost": sum(r["lost"] for r in runs.values()),
            "runs": runs,
        }
        print(json.dumps(result))
        return 0
    finally:
        if static is not None:
            static.terminate()
            static.wait()
        stop_all(children)
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
