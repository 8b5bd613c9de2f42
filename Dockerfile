# syntax=docker/dockerfile:1
# Build: docker build -t wxpush .
# Run:   docker run -e WXPUSH__WECHAT__SECRET=... -v wxpush-data:/var/lib/wxpush \
#          -v $PWD/wxpush.toml:/etc/wxpush/wxpush.toml:ro wxpush

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY fake-wechat/Cargo.toml fake-wechat/Cargo.toml
COPY testpg/Cargo.toml testpg/Cargo.toml
RUN mkdir -p src fake-wechat/src testpg/src migrations \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && touch fake-wechat/src/lib.rs && echo 'fn main() {}' > fake-wechat/src/main.rs \
    && touch testpg/src/lib.rs \
    && cargo build --release --locked --bin wxpush \
    && rm -rf src fake-wechat/src testpg/src
COPY src src
COPY migrations migrations
COPY fake-wechat/src fake-wechat/src
COPY testpg/src testpg/src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin wxpush

FROM debian:bookworm-slim
# reqwest (rustls) reads the system's CA certificates. Not pinned: the image should
# get Debian's current certificate bundle and security fixes at each build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wxpush \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wxpush wxpush \
    && mkdir -p /var/lib/wxpush /etc/wxpush \
    && chown 10001:10001 /var/lib/wxpush
COPY --from=build /src/target/release/wxpush /usr/local/bin/wxpush
COPY config/wxpush.example.toml /etc/wxpush/wxpush.toml
ENV WXPUSH_CONFIG=/etc/wxpush/wxpush.toml \
    WXPUSH__DATABASE__URL=sqlite:///var/lib/wxpush/wxpush.db
USER 10001:10001
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
