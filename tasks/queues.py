"""The Celery queues, and which process consumes each (the Procfile).

Deep analysis has one queue per tier (``deep_processing_{tier}``, consumed by the GPU
workers: ``python -m tasks.gpu_workers``); ``lite`` feeds the CPU lite scorer, ``digest``
the notifications and ``scheduler`` the beat-driven triage (all three ``worker_cpu``).
Each task names its queue where it is defined; a deep batch is sent to its tier's queue.
"""

from __future__ import annotations

from vigil.vocabulary import Tier


def deep_queue(tier: str) -> str:
    return f"deep_processing_{tier}"


DEEP_QUEUES = tuple(deep_queue(tier) for tier in Tier)
LITE_QUEUE = "lite"
DIGEST_QUEUE = "digest"
SCHEDULER_QUEUE = "scheduler"
CPU_QUEUES = (LITE_QUEUE, DIGEST_QUEUE, SCHEDULER_QUEUE)
QUEUES = (*DEEP_QUEUES, *CPU_QUEUES)
