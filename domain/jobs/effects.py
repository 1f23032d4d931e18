"""What a job's terminal outcome or an ops retry means for the resource it works on."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.customers.service import customer_erased
from domain.jobs.models import Job, JobAttempt
from domain.provisioning.rules import MADE_OUTSIDE
from domain.provisioning.service import no_room_again
from domain.services import rules as service_rules
from domain.services.models import Service


_ACTION_OF_KIND = {spec.kind: name for name, spec in service_rules.ACTIONS.items()}

#: How an attempt ends when it certainly changed nothing on WHM: WHM answered and refused (result 0, our
#: credentials, no such account), TLS failed before anything was sent, or hostq's own checks stopped it before
#: any call that changes the account (the account holds another domain, the service's state).
_CHANGED_NOTHING = ("whm_rejected", "whm_auth_failed", "whm_tls_untrusted", "whm_account_missing",
                    "whm_account_conflict", "invalid_state")


async def on_failed(session: AsyncSession, job: Job) -> None:
    """A provisioning job that gave up leaves its service `failed` (visible, retryable by ops): only while it is
    still the service's latest job, so that cancelling an old failed create never fails a newer one's service."""
    if job.kind == "provision.create" and job.resource_id is not None:
        await session.execute(update(Service).where(Service.id == job.resource_id, Service.last_job_id == job.id,
                                                    Service.status == service_rules.PROVISIONING)
                              .values(status=service_rules.FAILED))


async def requeue_refusal(session: AsyncSession, job: Job) -> str | None:
    """Why an ops retry of this failed job would do no good, or harm, or None.

    A job on a service must still be its service's latest (a later job, say a newer plan change or a terminate,
    has superseded it: retrying would undo what was asked after it), and the service's state must still allow
    the action. A create's service must still be `failed`, and its server must take it back unless the service
    still holds its place there (no_room_again).
    """
    action = _ACTION_OF_KIND.get(job.kind)
    if action is None or job.resource_id is None:
        return None
    service = await session.scalar(select(Service).where(Service.id == job.resource_id).with_for_update()
                                   .execution_options(populate_existing=True))
    if service is None:
        return "its service no longer exists"
    if job.kind == "provision.create" and service.status != service_rules.FAILED:
        return f"its service is {service.status} now"
    if not service_rules.can_start(action, service.status):
        return f"its service is {service.status} now: {service_rules.refusal(action, service.status)}"
    if service.last_job_id is not None and service.last_job_id != job.id:
        later = await session.get(Job, service.last_job_id)
        what = f" ({later.kind}, {later.status})" if later is not None else ""
        return f"superseded by a later job on its service: {service.last_job_id}{what}"
    if job.kind == "provision.create":
        if await customer_erased(session, service.customer_id):
            return f"invalid_state: {service_rules.ERASED_CUSTOMER}"
        full = await no_room_again(session, service)
        return f"no_capacity: {full}" if full else None
    return None


async def on_requeued(session: AsyncSession, job: Job) -> None:
    """An ops retry of a failed provisioning job puts its service back to `provisioning`."""
    if job.kind == "provision.create" and job.resource_id is not None:
        await session.execute(update(Service).where(Service.id == job.resource_id,
                                                    Service.status == service_rules.FAILED)
                              .values(status=service_rules.PROVISIONING, last_job_id=job.id))


async def in_doubt(session: AsyncSession, job: Job) -> str | None:
    """Why cancelling this job could leave its service out of step with its WHM account, or None.

    An action (suspend, unsuspend, terminate, change plan) whose attempt already ran may have made its WHM call
    with the answer lost (a timeout, a reset, a crash): cancelled, the service would keep its old state while the
    account has the new one. Letting it run, or retrying it, settles that (every attempt asks WHM first). Once a
    later job on the service superseded it, that job settled the account instead. Nor is one whose every attempt
    ended in a way that changed nothing (_CHANGED_NOTHING: say, WHM refused a plan change to a package it lacks).
    A create can always be cancelled: its service is then `failed` and a retry adopts any account the create made.
    """
    if job.kind == "provision.create" or job.kind not in _ACTION_OF_KIND or job.resource_id is None:
        return None
    if job.attempts == 0 and job.round == 1:
        return None
    if await _changed_nothing(session, job):
        return None
    service = await session.get(Service, job.resource_id)
    if service is None or service.last_job_id != job.id:
        return None
    return (f"an attempt of it already ran, so its WHM call may have taken effect: cancelled, the service would "
            f"stay {service.status} whatever its account became. Let it run (or retry it if failed): it asks WHM "
            "first. To cancel it anyway, use --force")


async def _changed_nothing(session: AsyncSession, job: Job) -> bool:
    """Whether the job's attempts are on record and every one of them ended changing nothing on WHM (one still
    running, or lost with its worker, may have)."""
    clear = func.coalesce(JobAttempt.error_code.in_(_CHANGED_NOTHING), False)  # no error code: not clear
    return bool(await session.scalar(select(func.bool_and(clear)).where(JobAttempt.job_id == job.id)))  # none: NULL


def adoption_refusal(job: Job) -> str | None:
    """Why an operator cannot adopt for this job (adopt_outside_account), or None."""
    if job.kind != "provision.create" or job.error_code != MADE_OUTSIDE:
        return (f"--adopt takes a provision.create that failed {MADE_OUTSIDE} (an account made outside hostq), "
                f"not a {job.kind} that failed {job.error_code}")
    return None


async def adopt_outside_account(session: AsyncSession, job: Job) -> None:
    """An operator's word that the WHM account a failed create found, with its service's username and domain but
    made outside hostq, is the service's: mark the service as one whose account may exist, so the retried job's
    next attempt asks WHM first and adopts it (domain/provisioning/accounts.py)."""
    await session.execute(update(Service).where(Service.id == job.resource_id,
                                                Service.create_attempted_at.is_(None))
                          .values(create_attempted_at=func.now()))


async def on_cancelled(session: AsyncSession, job: Job) -> None:
    """A cancelled provisioning job leaves its service `failed`, not waiting for work that will never run."""
    await on_failed(session, job)
