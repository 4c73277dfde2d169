"""``python -m tasks.gpu_workers``: one deep worker process per visible GPU, or one on CPU.

Each child is a Celery worker with a single prefork process (``-c 1``) pinned to its GPU
through ``CUDA_VISIBLE_DEVICES``; GPUs are counted with ``nvidia-smi`` so this parent never
initialises CUDA. Children are supervised: a signal to the parent stops them all, and if
one exits the parent stops the rest and exits with its status (the platform, or ``make
run``'s supervisor, restarts us). A broker restart is not such an exit: each worker
reconnects on its own (tasks.app.BrokerConnection, docs/operations.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from celery_config import DEEP_QUEUES
from tasks.app import worker_argv


def visible_gpus(environ: dict[str, str]) -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [g for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    if listing.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU")]


def worker_command(name: str) -> list[str]:
    # Kombu serves the queues in turn; what each tier gets is decided by the tick, which
    # keeps every tier's queue short (late binding), not by the order here.
    return worker_argv(DEEP_QUEUES, name)


def main() -> int:
    environ = dict(os.environ, VIGIL_WORKER_ROLE="deep")
    gpus = visible_gpus(environ)
    children = []
    for gpu in gpus or [None]:
        env = dict(environ)
        if gpu is None:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env.setdefault("VIGIL_DEVICE", "cpu")
            name = "deep-cpu"
        else:
            env["CUDA_VISIBLE_DEVICES"] = gpu
            name = f"deep-gpu{gpu}"
        children.append(subprocess.Popen(worker_command(name), env=env))

    def stop(*_args) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    stop()
    codes = [child.wait() for child in children]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    raise SystemExit(main())
