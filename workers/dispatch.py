"""Sending recorded jobs to the broker: one message per job, carrying its id (and its resource's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from domain.jobs.models import Job
from domain.settings import Settings, SettingsError

def make_broker(settings: Settings) -> dramatiq.Broker:
    """The Dramatiq broker named by HOSTQ_BROKER_URL, namespaced so deployments can share one Redis."""
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        raise SettingsError("HOSTQ_BROKER_URL: only redis:// brokers are supported in this version")
    # maintenance_chance: of every million broker commands, how many also requeue the messages of
    # workers whose heartbeat stopped. One in four: an idle worker polls about once a second, so a killed
    # worker's messages come back a few seconds after its heartbeat expires (30 s by default).
    return RedisBroker(url=settings.broker_url, namespace=f"{settings.namespace}:dramatiq",
                       heartbeat_timeout=int(settings.broker_heartbeat_s * 1000), maintenance_chance=250_000,
                       middleware=[], socket_connect_timeout=2, socket_timeout=10)


def job_message(job: Job) -> dramatiq.Message:
    """The broker message for a job on its queue: the job id as argument, the resource id (if any) as a keyword."""
    # The resource id travels as an argument too: the actor locks it before its first statement.
    kwargs = {"resource_id": str(job.resource_id)} if job.resource_id else {}
    return dramatiq.Message(queue_name=job.queue, actor_name=job.kind, args=(str(job.id),), kwargs=kwargs,
                            options={"job_id": str(job.id), "request_id": job.request_id,
                                     "resource_id": str(job.resource_id) if job.resource_id else None})


def dispatch(broker: dramatiq.Broker, jobs: Iterable[Job]) -> list[tuple[uuid.UUID, int]]:
    """Enqueue each job; return (id, round) of those that reached the broker (the relay retries the rest).

    The round goes with the id so that marking them dispatched later cannot mark a newer round of the same
    job (retried in between), whose message would then never be sent."""
    sent = []
    for job in jobs:
        try:
            broker.enqueue(job_message(job))
        except Exception:  # the broker is down: the job row stays undispatched for the relay
            continue
        sent.append((job.id, job.round))
    return sent
