# Jobwire node: `docker build -t jobwire .` then `docker run -p 7070:7070 -v jobwire:/data jobwire`.
# SQLite in /data by default; set JOBWIRE_REDIS_URL for several nodes (see deploy/docker-compose.yml).

FROM node:20-slim AS build
WORKDIR /app
# better-sqlite3 compiles from source when no prebuilt binary matches the platform.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY . .
RUN npm ci
RUN npm run build
RUN npm prune --omit=dev

FROM node:20-slim
ENV NODE_ENV=production \
    JOBWIRE_DATA_DIR=/data \
    JOBWIRE_PORT=7070
WORKDIR /app
COPY --from=build --chown=root:root /app /app
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
CMD ["serve", "--host", "0.0.0.0"]
