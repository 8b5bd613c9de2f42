# Build: docker build --build-arg WXPUSH_COMMIT=$(git rev-parse --short=12 HEAD) -t wxpush .
#        (without it `wxpush --version` says "unknown": .git is not sent to the builder)
# Run:   docker run -v wxpush-data:/var/lib/wxpush \
#          -v $PWD/wxpush.toml:/etc/wxpush/wxpush.toml:ro \
#          -v $PWD/wechat_secret:/run/secrets/wechat_secret:ro \
#          -e WXPUSH__WECHAT__SECRET_FILE=/run/secrets/wechat_secret wxpush
#
# Secrets: give them as files, never with `-e WXPUSH__WECHAT__SECRET=...` (which
# `docker inspect` and /proc/PID/environ show). With Compose or Swarm, a Docker
# secret named wechat_secret appears at /run/secrets/wechat_secret; point the
# daemon at it with WXPUSH__WECHAT__SECRET_FILE=/run/secrets/wechat_secret. Likewise
# WXPUSH__INTAKE__CALLBACK_TOKEN_FILE, WXPUSH__INTAKE__ENCODING_AES_KEY_FILE and
# WXPUSH__DATABASE__PASSWORD_FILE. The image's user (uid 65532) must be able to
# read the file: Compose without Swarm bind-mounts it with its host owner and mode.
#
# The final image is distroless (glibc, libgcc, CA certificates, no shell, no
# package manager): about 23 MB of base plus the stripped binary.
#
# Where Docker Hub, gcr.io and crates.io are slow or out of reach (mainland
# China), point the build at mirrors; nothing else changes:
#   docker build \
#     --build-arg RUST_IMAGE=docker.m.daocloud.io/library/rust:1.95-slim-bookworm \
#     --build-arg RUNTIME_IMAGE=gcr.m.daocloud.io/distroless/cc-debian12:nonroot \
#     --build-arg CRATES_MIRROR=sparse+https://rsproxy.cn/index/ -t wxpush .
# (Cargo.lock still pins every crate by checksum, whichever registry serves it.)
#
# CI replays this stage's COPY lines in a clean folder and builds the workspace
# there (.ci/docker-copyset), so a file the build needs and this file does not
# copy fails CI, not `docker build`.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# A crates.io mirror, as a sparse registry URL (empty: crates.io itself).
ARG CRATES_MIRROR=""
WORKDIR /src
RUN if [ -n "${CRATES_MIRROR}" ]; then \
        mkdir -p "${CARGO_HOME:-/usr/local/cargo}" \
        && printf '[source.crates-io]\nreplace-with = "mirror"\n[source.mirror]\nregistry = "%s"\n' \
            "${CRATES_MIRROR}" > "${CARGO_HOME:-/usr/local/cargo}/config.toml"; \
    fi
# Dependencies first, so that a source change does not rebuild them. Every
# workspace member's manifest is needed for the workspace to load.
COPY Cargo.toml Cargo.lock build.rs ./
COPY fake-wechat/Cargo.toml fake-wechat/Cargo.toml
COPY testpg/Cargo.toml testpg/Cargo.toml
COPY testmysql/Cargo.toml testmysql/Cargo.toml
RUN mkdir -p src fake-wechat/src testpg/src testmysql/src migrations \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && touch fake-wechat/src/lib.rs && echo 'fn main() {}' > fake-wechat/src/main.rs \
    && touch testpg/src/lib.rs testmysql/src/lib.rs \
    && cargo build --release --locked --bin wxpush \
    && rm -rf src fake-wechat/src testpg/src testmysql/src
COPY src src
COPY migrations migrations
# `wxpush init` and `config example` print the starter config, compiled in.
COPY config/wxpush.example.toml config/wxpush.example.toml
# The sends API serves its OpenAPI document, compiled in.
COPY docs/openapi.json docs/openapi.json
COPY fake-wechat/src fake-wechat/src
COPY testpg/src testpg/src
COPY testmysql/src testmysql/src
# The commit `wxpush --version` and wxpush_build_info name (build.rs). Declared
# here, after the dependency layer, so that a new commit does not rebuild it.
ARG WXPUSH_COMMIT=""
RUN touch src/main.rs src/lib.rs \
    && WXPUSH_COMMIT="${WXPUSH_COMMIT}" cargo build --release --locked --bin wxpush \
    && mkdir -p /image/state

# Debian 12's glibc, as in the build stage. Runs as nonroot (uid and gid 65532).
FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/wxpush /usr/local/bin/wxpush
COPY config/wxpush.example.toml /etc/wxpush/wxpush.toml
# An empty directory owned by the image's user: there is no shell to mkdir with.
# A new named volume takes this owner.
COPY --from=build --chown=65532:65532 /image/state /var/lib/wxpush
ENV WXPUSH_CONFIG=/etc/wxpush/wxpush.toml \
    WXPUSH__DATABASE__URL=sqlite:///var/lib/wxpush/wxpush.db
USER 65532:65532
VOLUME ["/var/lib/wxpush"]
# SIGTERM: no new sends, in-flight ones finish and are recorded (well within the
# default 10 s stop timeout when WeChat answers; requests time out after [wechat] timeout).
STOPSIGNAL SIGTERM
# The binary asks its own /readyz (database reachable, token cached or obtainable).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/wxpush", "health"]
# /metrics and /readyz listen on 127.0.0.1:9464 inside the container; to scrape
# from outside, run with -e WXPUSH__HTTP__LISTEN=0.0.0.0:9464 -p 9464:9464.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/wxpush"]
CMD ["run"]
