"""What a job's terminal outcome or an ops retry means for the resource it works on."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.jobs.models import Job
from domain.services import rules as service_rules
from domain.services.models import Service


async def on_failed(session: AsyncSession, job: Job) -> None:
    """A provisioning job that gave up leaves its service `failed` (visible, retryable by ops)."""
    if job.kind == "provision.create" and job.resource_id is not None:
        await session.execute(update(Service).where(Service.id == job.resource_id,
                                                    Service.status == service_rules.PROVISIONING)
                              .values(status=service_rules.FAILED))


async def on_requeued(session: AsyncSession, job: Job) -> None:
    """An ops retry of a failed provisioning job puts its service back to `provisioning`."""
    if job.kind == "provision.create" and job.resource_id is not None:
        await session.execute(update(Service).where(Service.id == job.resource_id,
                                                    Service.status == service_rules.FAILED)
                              .values(status=service_rules.PROVISIONING, last_job_id=job.id))


async def on_cancelled(session: AsyncSession, job: Job) -> None:
    """A cancelled provisioning job leaves its service `failed`, not waiting for work that will never run."""
    await on_failed(session, job)
