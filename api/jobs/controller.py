"""`/v1/jobs/{id}` and its alias `/v1/provision/{job_id}/status`."""

from __future__ import annotations

from litestar import Controller, get
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import requires
from api.customers.controller import Limit
from api.jobs.schemas import Job, JobList
from domain.ids import parse_id
from domain.jobs.service import get_job, list_tenant_jobs
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

    @get("/jobs", summary="List jobs", description="Newest first; filter by `status`, `kind` (e.g. provision.create) "
         "and `resource_id` (e.g. a service id).")
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50, cursor: str | None = None,
                    status: str | None = None, kind: str | None = None, resource_id: str | None = None) -> JobList:
        resource = parse_id(resource_id) if resource_id else None
        if resource_id and resource is None:
            return JobList(data=[], next_cursor=None)  # not an id: nothing can match
        rows, next_cursor = await list_tenant_jobs(session, caller.tenant_id, limit=limit, cursor=cursor,
                                                   status=status, kind=kind, resource_id=resource)
        return JobList(data=[Job.of(r) for r in rows], next_cursor=next_cursor)
