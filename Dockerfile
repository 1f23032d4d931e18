# The image docker-compose.yml builds (documentation: no Docker engine runs in this repository's CI).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY api api
COPY domain domain
COPY workers workers
COPY schedules schedules
COPY migrations migrations
COPY hostq hostq
RUN pip install --no-cache-dir .
USER nobody
