# syntax=docker/dockerfile:1
#
# Threadline application image: one image, every service.
#   docker build -t threadline:dev .
#   docker run --rm threadline:dev serve referrals      (see docker-compose.yml)
#
# Two stages: the first installs the project (runtime dependencies only, no dev
# extras) into a virtualenv; the second copies just that virtualenv, so neither
# the source tree nor pip's build tooling ends up in the running image.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:20-slim

# The portal's GOV.UK Frontend assets, exactly as services/portal/package-lock.json pins them.
FROM ${NODE_IMAGE} AS assets
WORKDIR /portal
COPY services/portal/package.json services/portal/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/threadline
ENV PATH=/opt/threadline/bin:$PATH
WORKDIR /src
# .dockerignore keeps var/, .venv/, .git/, tests/, bench/ ... out of this copy.
COPY . .
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="threadline" \
      org.opencontainers.image.description="Threadline event-driven safeguarding services"
ENV PATH=/opt/threadline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    THREADLINE_HOST=0.0.0.0
RUN groupadd --system --gid 10001 threadline \
 && useradd --system --uid 10001 --gid threadline --no-log-init \
        --home-dir /home/threadline --create-home --shell /usr/sbin/nologin threadline \
 && install -d -o threadline -g threadline -m 0700 /var/lib/threadline/consent
COPY --from=build /opt/threadline /opt/threadline
# Runtime data files that are not Python packages (e.g. config/calendars/*.toml,
# read through THREADLINE_CALENDAR_FILE). Owned by root: read-only for the app.
WORKDIR /app
COPY config /app/config
COPY --from=assets /portal/node_modules /app/portal/node_modules
USER threadline:threadline
EXPOSE 8100 8101 8102 8103 8105
ENTRYPOINT ["threadline"]
CMD ["--help"]
