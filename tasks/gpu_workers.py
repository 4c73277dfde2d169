"""``python -m tasks.gpu_workers``: one deep worker process per visible GPU, or one on CPU.

Each child is a Celery worker, one process running ``DEEP_TASK_THREADS`` tasks as threads
(``--pool threads``; docs/deep-workers.md), pinned to its GPU
through ``CUDA_VISIBLE_DEVICES``; GPUs are counted with ``nvidia-smi`` so this parent never
initialises CUDA. Children are supervised: a signal to the parent stops them all, and if
one exits the parent stops the rest and exits with its status (the platform, or ``make
run``'s supervisor, restarts us). A broker restart is not such an exit: each worker
reconnects on its own (tasks.app.BrokerConnection, docs/operations.md).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

from tasks.app import worker_argv
from tasks.context import DEEP_ROLE
from tasks.queues import DEEP_QUEUES
from vigil.settings import Settings, current, environment


def visible_gpus(settings: Settings) -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list."""
    if settings.cuda_visible_devices is not None:
        return list(settings.cuda_visible_devices)
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    if listing.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU")]


def worker_command(name: str, task_threads: int = 1) -> list[str]:
    # Kombu serves the queues in turn; what each tier gets is decided by the tick, which
    # keeps every tier's queue short (late binding), not by the order here. The tasks run
    # as threads of the one process that owns the device, so their frames share batches.
    return worker_argv(DEEP_QUEUES, name, task_threads, "--pool", "threads")


def child_environments(settings: Settings, environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each deep worker's name and environment: pinned to one GPU, or the CPU without one."""
    deep = dict(environ, VIGIL_WORKER_ROLE=DEEP_ROLE)
    gpus = visible_gpus(settings)
    if not gpus:
        return {
            "deep-cpu": dict(
                deep, CUDA_VISIBLE_DEVICES="", VIGIL_DEVICE=settings.vigil_device or "cpu"
            )
        }
    return {f"deep-gpu{gpu}": dict(deep, CUDA_VISIBLE_DEVICES=gpu) for gpu in gpus}


def main() -> int:
    # The children inherit this process's environment, pinned; they read their own settings.
    settings = current()
    children = [
        subprocess.Popen(worker_command(name, settings.deep_task_threads), env=env)
        for name, env in child_environments(settings, environment()).items()
    ]

    def stop(*_args: object) -> None:
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
