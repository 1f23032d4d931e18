"""`/v1/jobs/{id}` and its alias `/v1/provision/{job_id}/status`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import principal, requires
from api.deps import db_for
from api.customers.controller import Limit
from api.jobs.schemas import Job, JobList
from api.openapi import Cursor, documented, resource_id
from domain.ids import filter_id, parse_id
from domain.jobs.rules import KINDS, STATUSES
from domain.jobs.service import check_filter, get_job, list_jobs
from domain.tenants.service import Principal

JobId = resource_id("job")


class JobController(Controller):
    path = "/v1"
    tags = ["jobs"]
    opt = requires("jobs:read")

    @get("/jobs/{job_id:str}", summary="Get a job", **documented("GET", by_id=True))
    async def read(self, job_id: JobId, request: Request) -> Job:
        # No dependencies (the hot path): the request gives the caller and the connection.
        async with db_for(request) as db:
            return Job.of(await get_job(db, parse_id(job_id), principal(request).tenant_id))

    @get("/provision/{job_id:str}/status", summary="Get a provisioning job (alias of GET /v1/jobs/{id})",
         **documented("GET", by_id=True))
    async def status(self, job_id: JobId, request: Request) -> Job:
        async with db_for(request) as db:
            return Job.of(await get_job(db, parse_id(job_id), principal(request).tenant_id))

    @get("/jobs", summary="List jobs", description="Newest first; filter by `status`, `kind` (e.g. provision.create) "
         "and `resource_id` (e.g. a service id).", **documented("GET"))
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50, cursor: Cursor = None,
                    status: Annotated[str | None, Parameter(
                        description="Only jobs in this status; any other value is 400",
                        schema_extra={"enum": list(STATUSES)})] = None,
                    kind: Annotated[str | None, Parameter(
                        description="Only jobs of this kind; any other value is 400",
                        schema_extra={"enum": list(KINDS)})] = None,
                    resource_id: Annotated[str | None, Parameter(
                        description="Only jobs working on this resource (e.g. a service id); a value that is not "
                                    "a UUID is 400", schema_extra={"format": "uuid"})] = None) -> JobList:
        check_filter(status, kind)
        resource = filter_id(resource_id, "resource_id")
        rows, next_cursor = await list_jobs(session, tenant_id=caller.tenant_id, limit=limit, cursor=cursor,
                                            status=status, kind=kind, resource_id=resource)
        return JobList(data=[Job.of(r) for r in rows], next_cursor=next_cursor)
