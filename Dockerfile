# Jobwire node: `docker build -t jobwire .` then `docker run -p 7070:7070 -v jobwire:/data jobwire`.
# SQLite in /data by default; set JOBWIRE_REDIS_URL for several nodes (see deploy/docker-compose.yml).
# `docker run -p 7070:7070 jobwire serve --demo` starts the demo; docs/docker.md has the rest.

FROM node:20-slim AS build
WORKDIR /app
# better-sqlite3 compiles from source when no prebuilt binary matches the platform.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY . .
# The lockfile's versions. Lifecycle scripts off (the root `prepare` would build a second time);
# better-sqlite3's is the one install script Jobwire needs. Then one build: packages and dashboard.
RUN npm ci --ignore-scripts \
  && npm rebuild better-sqlite3 \
  && npm run build \
  && npm prune --omit=dev
# What a node runs: the server's bin, dist and built dashboard, the packages it imports, and the
# production dependencies; no sources, tests, benches or the dashboard's own build.
RUN mkdir /node \
  && cp -a --parents package.json node_modules packages/protocol/package.json packages/protocol/dist \
       packages/worker/package.json packages/worker/dist \
       packages/server/package.json packages/server/dist packages/server/bin packages/server/public /node

FROM node:20-slim
ENV NODE_ENV=production \
    JOBWIRE_DATA_DIR=/data \
    JOBWIRE_HOST=0.0.0.0 \
    JOBWIRE_PORT=7070
WORKDIR /app
COPY --from=build --chown=root:root /node /app
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 7070
# Ready = the store answers and the sweeps run (GET /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.JOBWIRE_PORT || 7070) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node is PID 1 here and handles SIGTERM itself: streams are handed off, then the store is closed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "packages/server/bin/jobwire.js"]
CMD ["serve"]
