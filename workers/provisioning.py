"""Provisioning actors: thin, by job id; the work is in domain/provisioning."""

from __future__ import annotations

import uuid

import dramatiq

from domain.provisioning.accounts import create_account
from domain.provisioning.actions import run_action
from workers.runtime import runtime


async def _service_of(db, job_id: str) -> uuid.UUID:
    return await db.fetchval("SELECT resource_id FROM jobs WHERE id = $1", uuid.UUID(job_id))


@dramatiq.actor(actor_name="provision.create", queue_name="provisioning")
async def provision_create(job_id: str, service_id: str | None = None) -> dict:
    """Create the service's WHM account exactly once (adopting one a timed-out call left behind)."""
    rt = runtime()
    db = await rt.db.get()
    service = uuid.UUID(service_id) if service_id else await _service_of(db, job_id)
    return await create_account(db, service, rt.whm_for)


async def _action(job_id: str) -> dict:
    rt = runtime()
    return await run_action(rt.sessions, uuid.UUID(job_id), rt.whm_for)


for _kind in ("provision.suspend", "provision.unsuspend", "provision.terminate", "provision.change_plan"):
    dramatiq.actor(_action, actor_name=_kind, queue_name="provisioning")
