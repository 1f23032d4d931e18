"""`/v1/services`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api import request_ids
from api.auth import principal, requires
from api.customers.controller import Limit
from api.deps import ON_DB, after_commit, db_for
from api.jobs.schemas import Job
from api.openapi import Cursor, documented, resource_id
from api.services.schemas import (Accepted, ChangePlanRequest, NoFields, Service, ServiceList, ServiceOrder,
                                  SuspendRequest)
from domain.ids import filter_id, parse_id
from domain.services import service
from domain.services.lifecycle import request_action
from domain.services.rules import STATUSES
from domain.settings import Settings
from domain.tenants.service import Principal

LOCATION = ResponseHeader(name="Location", value="/v1/jobs/<job_id>", required=True, documentation_only=True,
                          description="`/v1/jobs/<job_id>`: poll it for the outcome")
ACCEPTED = "The job doing the work (poll `Location`) and the service it works on"
ServiceId = resource_id("service")


def accepted(body: Accepted) -> Response[Accepted]:
    """202 with the job's location."""
    return Response(body, status_code=202, headers={"Location": f"/v1/jobs/{body.job.id}"})


IN_FLIGHT_NOTE = ("Answers 202 with the job. Asking again while that job is in flight returns the same job; "
                  "while a job of another kind is in flight for the service, 409 conflict naming it, whatever the "
                  "state (so terminating a `provisioning` service is 409 until its create ends). Otherwise a state "
                  "that does not allow the action: 422 invalid_state.")


async def _act(session: AsyncSession, caller: Principal, service_id: str, action: str, request_id: str,
               settings: Settings, **extra) -> Response[Accepted]:
    row, job = await request_action(session, caller.tenant_id, parse_id(service_id), action, request_id=request_id,
                                    max_attempts=settings.job_max_attempts, **extra)
    return accepted(Accepted(job=Job.of(job), service=Service.of(row)))


class ServiceController(Controller):
    path = "/v1/services"
    tags = ["services"]

    @post("/", opt={**requires("services:write"), **ON_DB}, status_code=202, response_headers=[LOCATION],
          summary="Order a service", response_description=ACCEPTED,
          description="Records the service and its `provision.create` job. `plan` is the plan's code; a `region` "
                      "with no WHM server, an unknown customer or plan, or a billing cycle the plan is not sold "
                      "in is 400; a region whose servers are all full is 422 no_capacity; a customer whose personal "
                      "data was erased is 422 invalid_state; a domain or username already in use is 409 conflict, "
                      "with the field in `errors`. A domain is hosted once across the whole installation, whichever "
                      "reseller ordered it (WHM, like DNS, knows a domain once): its 409 says the domain is taken, "
                      "not by whom; a username clashes only on the server the order is placed on.",
          **documented("POST", conflict=True, capacity=True, states=True))
    async def order(self, data: ServiceOrder, request: Request) -> Response[Accepted]:
        # No dependencies (the hot path): the request gives the caller, the connection and the settings.
        order = service.Order(customer_id=data.customer_id, plan=data.plan, domain=data.domain, region=data.region,
                              billing_cycle=data.billing_cycle, username=data.username, provision=data.provision)
        max_attempts = request.app.state.resources.settings.job_max_attempts
        async with db_for(request, one_statement=True) as db:  # place_order is one statement
            row, job = await service.place_order(db, principal(request).tenant_id, order, max_attempts=max_attempts,
                                                 request_id=request_ids.request_id(request.scope))
            after_commit(request, [job])
        return accepted(Accepted(job=Job.of(job), service=Service.of(row)))

    @get("/{service_id:str}", opt=requires("services:read"), summary="Get a service",
         **documented("GET", by_id=True))
    async def read(self, service_id: ServiceId, session: AsyncSession, caller: Principal) -> Service:
        return Service.of(await service.get_service(session, caller.tenant_id, parse_id(service_id)))

    @get("/", opt=requires("services:read"), summary="List services", **documented("GET"))
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50, cursor: Cursor = None,
                    customer_id: Annotated[str | None, Parameter(
                        description="Only this customer's services; a value that is not a UUID is 400",
                        schema_extra={"format": "uuid"})] = None,
                    status: Annotated[str | None, Parameter(
                        description="Only services in this status; any other value is 400",
                        schema_extra={"enum": list(STATUSES)})] = None) -> ServiceList:
        customer = filter_id(customer_id, "customer_id")
        rows, next_cursor = await service.list_services(
            session, caller.tenant_id, limit=limit, cursor=cursor, status=status, customer_id=customer)
        return ServiceList(data=[Service.of(r) for r in rows], next_cursor=next_cursor)

    @post("/{service_id:str}/suspend", opt=requires("services:write"), status_code=202,
          response_headers=[LOCATION], summary="Suspend a service", description=IN_FLIGHT_NOTE,
          response_description=ACCEPTED, **documented("POST", by_id=True, conflict=True, states=True))
    async def suspend(self, service_id: ServiceId, session: AsyncSession, caller: Principal, request_id: str,
                      settings: Settings, data: SuspendRequest | None = None) -> Response[Accepted]:
        reason = data.reason if data else None
        return await _act(session, caller, service_id, "suspend", request_id, settings, reason=reason)

    @post("/{service_id:str}/unsuspend", opt=requires("services:write"), status_code=202,
          response_headers=[LOCATION], summary="Unsuspend a service", description=IN_FLIGHT_NOTE,
          response_description=ACCEPTED, **documented("POST", by_id=True, conflict=True, states=True))
    async def unsuspend(self, service_id: ServiceId, session: AsyncSession, caller: Principal, request_id: str,
                        settings: Settings, data: NoFields | None = None) -> Response[Accepted]:
        return await _act(session, caller, service_id, "unsuspend", request_id, settings)

    @post("/{service_id:str}/terminate", opt=requires("services:write"), status_code=202,
          response_headers=[LOCATION], summary="Terminate a service (removes the WHM account)",
          description=IN_FLIGHT_NOTE, response_description=ACCEPTED,
          **documented("POST", by_id=True, conflict=True, states=True))
    async def terminate(self, service_id: ServiceId, session: AsyncSession, caller: Principal, request_id: str,
                        settings: Settings, data: NoFields | None = None) -> Response[Accepted]:
        return await _act(session, caller, service_id, "terminate", request_id, settings)

    @post("/{service_id:str}/change-plan", opt=requires("services:write"), status_code=202,
          response_headers=[LOCATION], summary="Move a service to another plan (WHM changepackage)",
          description=IN_FLIGHT_NOTE + " A plan code this tenant does not have, or a plan not sold in the "
          "service's billing cycle or priced in another currency than the service's plan, is 400; the plan the "
          "service is already on, 422 invalid_state; asking for another plan while a plan change is in flight, "
          "409 conflict (naming the job).",
          response_description=ACCEPTED, **documented("POST", by_id=True, conflict=True, states=True))
    async def change_plan(self, service_id: ServiceId, data: ChangePlanRequest, session: AsyncSession,
                          caller: Principal, request_id: str, settings: Settings) -> Response[Accepted]:
        return await _act(session, caller, service_id, "change_plan", request_id, settings, plan=data.plan)


class ProvisionController(Controller):
    path = "/v1/provision"
    tags = ["provisioning"]

    @post("/{service_id:str}", opt=requires("provisioning:write"), status_code=202,
          response_headers=[LOCATION], summary="Provision a pending or failed service",
          description=IN_FLIGHT_NOTE + " A failed service stays on its server. If a createacct may have made its "
          "account there, it still holds its place, and provisioning it again adopts that account. Otherwise it "
          "left the server's count: if that server has been filled or disabled since, 422 no_capacity and "
          "nothing changes. A failed service of a customer whose personal data was erased is 422 invalid_state.", response_description=ACCEPTED,
          **documented("POST", by_id=True, conflict=True, states=True, capacity=True))
    async def provision(self, service_id: ServiceId, session: AsyncSession, caller: Principal, request_id: str,
                        settings: Settings, data: NoFields | None = None) -> Response[Accepted]:
        return await _act(session, caller, service_id, "provision", request_id, settings)
