# The demo app of docker-compose.yml: the e2e-otel demo shop plus its traffic driver.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY e2e_otel ./e2e_otel
RUN pip install . && useradd --create-home --uid 10001 app

USER app
EXPOSE 8000
# Configured by the environment (docker-compose.yml): DATABASE_URL, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME.
CMD ["e2e-otel", "demo", "--host", "0.0.0.0", "--port", "8000"]
