# breakglass: the Slack bot over HTTP (gunicorn, POST /slack/events, GET /healthz), the SQLite store on /data.
# Build and run: see README.md, "Container". compose.yaml runs it with the store on a volume.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY store ./store
# The project (and its dependencies) from pyproject.toml into a venv that the runtime stage copies as is.
RUN python -m venv /opt/breakglass && /opt/breakglass/bin/pip install --no-cache-dir .

FROM python:3.12-slim
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
ENTRYPOINT ["breakglass-bot"]
CMD ["http"]
