"""Provisioning actors: thin, by job id; the work is in domain/provisioning."""

from __future__ import annotations

from domain.jobs.tracking import ensure_turn
from domain.provisioning import accounts
from domain.provisioning.actions import run_action
from workers.middleware import Attempt, job_actor
from workers.runtime import runtime


@job_actor(actor_name="provision.create", queue_name="provisioning", loads=accounts.LOAD_SERVICE,
           completes=accounts.ACTIVATE)
async def provision_create(attempt: Attempt) -> dict:
    """Create the service's WHM account exactly once (adopting one a timed-out call left behind)."""
    rt = runtime()
    return await accounts.create_account(attempt.db, attempt.row, rt.whm_for, attempt.ticket,
                                         create_settles_s=rt.settings.create_settles_s)


async def _action(attempt: Attempt) -> dict:
    rt = runtime()
    return await run_action(rt.sessions, attempt.job_id, rt.whm_for, create_settles_s=rt.settings.create_settles_s,
                            turn_check=lambda: ensure_turn(attempt.db, attempt.ticket))


for _kind in ("provision.suspend", "provision.unsuspend", "provision.terminate", "provision.change_plan"):
    job_actor(actor_name=_kind, queue_name="provisioning")(_action)
