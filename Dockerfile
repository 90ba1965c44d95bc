# Vigil add-on image: Debian bookworm, amd64 and aarch64.
# The Supervisor builds it from this repository alone; CI builds and publishes the same file
# for `image:` (.github/workflows/publish.yaml). Build stage and runtime share the Debian release
# and the install script, so the libraries the binary was linked against are the ones it runs on.

FROM rust:1.95-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin vigil \
    && install -D -m 0755 target/release/vigil /out/vigil

FROM ghcr.io/home-assistant/base-debian:bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG BUILD_ARCH=amd64
ARG BUILD_VERSION=0.1.0
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
COPY --from=build /usr/local/lib/vigil/libonnxruntime.so /usr/local/lib/vigil/libonnxruntime.so
COPY --from=build /out/vigil /usr/bin/vigil
COPY models/ /usr/share/vigil/models/
RUN echo "9915c548854def365b1f399c529f28568f8b93e2df4ab3dc00ff1aac0675010d  /usr/share/vigil/models/yamnet.onnx" \
    | sha256sum -c - \
    && /usr/bin/vigil --version
COPY addon/rootfs /

LABEL io.hass.version="${BUILD_VERSION}" io.hass.type="app" io.hass.arch="${BUILD_ARCH}" \
    org.opencontainers.image.title="Vigil" \
    org.opencontainers.image.description="Baby-monitor camera hub for Home Assistant" \
    org.opencontainers.image.licenses="Apache-2.0"

# Asks Vigil itself over HTTP (addon/rootfs/usr/local/bin/vigil-healthcheck).
HEALTHCHECK --start-period=60s --interval=30s --timeout=5s \
    CMD ["/usr/local/bin/vigil-healthcheck"]
