"""`/v1/jobs/{id}` and its alias `/v1/provision/{job_id}/status`."""

from __future__ import annotations

from litestar import Controller, get
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import requires
from api.jobs.schemas import Job
from domain.ids import parse_id
from domain.jobs.service import get_job
from domain.tenants.service import Principal


class JobController(Controller):
    path = "/v1"
    tags = ["jobs"]
    guards = [requires("jobs:read")]

    @get("/jobs/{job_id:str}", summary="Get a job")
    async def read(self, job_id: str, session: AsyncSession, caller: Principal) -> Job:
        return Job.of(await get_job(session, parse_id(job_id), caller.tenant_id))

    @get("/provision/{job_id:str}/status", summary="Get a provisioning job (alias of GET /v1/jobs/{id})")
    async def status(self, job_id: str, session: AsyncSession, caller: Principal) -> Job:
        return Job.of(await get_job(session, parse_id(job_id), caller.tenant_id))
