# breakglass: the Slack bot, Socket Mode when SLACK_APP_TOKEN is set, else HTTP (gunicorn, POST /slack/events,
# GET /healthz, GET /metrics), as `breakglass-bot` chooses on the command line. The SQLite store on /data.
# Build and run: see README.md, "Container". compose.yaml runs it with the store on a volume and a policy.
#
# The base image is pinned by digest (python:3.12-slim-bookworm, the SAM template's python3.12); refresh it
# deliberately: `docker buildx imagetools inspect python:3.12-slim-bookworm` and replace both digests.
FROM python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY bot ./bot
COPY store ./store
# The runtime dependencies exactly as locked (every file's hash checked), then the project alone.
RUN python -m venv /opt/breakglass \
    && /opt/breakglass/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
    && /opt/breakglass/bin/pip install --no-cache-dir --no-deps .

FROM python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254
ENV PATH=/opt/breakglass/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BREAKGLASS_STORE=sqlite:////data/breakglass.db \
    PORT=3000
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home --shell /usr/sbin/nologin breakglass
COPY --from=build /opt/breakglass /opt/breakglass
USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
# No curl in the slim image: the health check is Python's own urllib (exit 1 unless /healthz answers 200).
# In Socket Mode (SLACK_APP_TOKEN set) nothing listens on $PORT, so the check only asks that the process lives.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; os.environ.get('SLACK_APP_TOKEN') or urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
ENTRYPOINT ["breakglass-bot"]
CMD ["run"]
