# doorman: one image for the sidecar (`run`, the default), `webhook`, `checker`, `inject` and the rest.
#   docker build -t doorman:0.1.0 .
# Build stage: all dependencies, compile TypeScript (npm ci runs the `prepare` script), then drop the dev ones. Only
# the sidecar's sources come in: the demo and the docs generator (tools/, an npm workspace of their own) stay out, so
# neither they nor what only they need (@grpc/grpc-js) reach the image; scripts/build.mjs skips them here.
FROM node:26.10.0-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev \
 && find dist -name '*.d.ts' -delete

# Runtime stage: production dependencies and the compiled code only, run as a non-root user.
FROM node:26.10.0-bookworm-slim
ENV NODE_ENV=production
# glibc's allocator: one arena and fixed trim/mmap thresholds, so what V8's background threads and the sockets free
# after a burst goes back to the system instead of staying in per-thread arenas: about 6 MB less resident after a
# 200-connection run (docs/benchmarks.md, Memory). `npm run bench -- --only memory` runs doorman with these.
ENV MALLOC_ARENA_MAX=1 MALLOC_TRIM_THRESHOLD_=262144 MALLOC_MMAP_THRESHOLD_=262144
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# uid/gid 1000 is the image's `node` user; numeric, so Kubernetes can check runAsNonRoot (the injector sets the same).
USER 1000:1000
EXPOSE 7080 7081 7090 8443
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["run"]
