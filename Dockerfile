# gtfs-fetch container image.
#
#   docker build -t gtfs-fetch .
#   docker run --rm -p 8000:8000 \
#       -e DATABASE_URL=postgres://gtfs:secret@db-host:5432/gtfs gtfs-fetch
#
# The runtime image contains no PostgreSQL server, so the embedded database that
# `serve` starts when DATABASE_URL is unset cannot run here: DATABASE_URL must be set
# (see docker-compose.yml, which provides a `db` service).

# ---------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, against dummy sources, so this layer stays cached until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/fetcher.rs \
    && cargo build --release --locked \
    && rm -rf src benches

# The real sources. migrations/ is embedded into the binary at compile time by
# sqlx::migrate!("./migrations"), so it must be here before building.
COPY src ./src
# Declared as a [[bench]] in Cargo.toml, so it must exist (it is not built here).
COPY benches ./benches
COPY migrations ./migrations
COPY config ./config
# build.rs records the commit for --version; .git is not in the context, so pass it:
# docker build --build-arg BUILD_GIT_SHA=$(git rev-parse --short=12 HEAD) .
COPY build.rs ./
ARG BUILD_GIT_SHA=unknown
# COPY keeps the context's modification times, which may be older than the dummy
# build's outputs: touch the crate roots so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs benches/fetcher.rs \
    && cargo build --release --locked

# ---------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with a fixed uid, so volume ownership is predictable.
RUN groupadd --system --gid 10001 gtfs \
    && useradd --system --uid 10001 --gid gtfs --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gtfs

WORKDIR /app
COPY --from=builder /build/target/release/gtfs-fetch /usr/local/bin/gtfs-fetch
# config/default.toml is read relative to the working directory (/app).
COPY --from=builder /build/config ./config
COPY --from=builder /build/migrations ./migrations
RUN mkdir -p /app/data && chown gtfs:gtfs /app/data

# Only used by the embedded PostgreSQL, which needs server binaries this image does
# not have; with DATABASE_URL set (required here) nothing is written there.
ENV GTFS_DATA_DIR=/app/data
# Required, no default here: DATABASE_URL=postgres://user:password@host:5432/dbname

EXPOSE 8000

# No HEALTHCHECK: the image has no curl or wget. Orchestrators probe GET /healthz
# (liveness, open to all) themselves; GET /readyz answers other hosts only with the ops
# token, so docker-compose.yml and deploy/k8s/deployment.yaml ask it over the
# container's loopback with bash (exec 3<>/dev/tcp/127.0.0.1/8000).

USER gtfs
ENTRYPOINT ["gtfs-fetch"]
CMD ["serve"]
