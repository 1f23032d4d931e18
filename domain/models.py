"""Every table, imported once so the metadata (and Alembic) sees them all."""

from domain.catalog.models import Plan
from domain.customers.models import Customer
from domain.db import Base
from domain.idempotency.models import IdempotencyKey
from domain.jobs.models import Job, JobAttempt
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from domain.tenants.models import ApiKey, Tenant

__all__ = ["ApiKey", "Base", "Customer", "IdempotencyKey", "Job", "JobAttempt", "Plan", "Service", "Tenant",
           "WhmServer"]
