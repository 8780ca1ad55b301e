# Prox as a FROM-scratch image: the compiled executable, the shared libraries it links, CA roots,
# config.yaml (listening on 0.0.0.0:3000) and static/. Nothing else: no shell, no package manager.
#
#   docker build -t prox .
#   docker run --rm -p 3000:3000 prox
#   docker run --rm -p 8443:8443 -v $PWD/my.yaml:/config.yaml:ro prox
#
# Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 .` (TARGETARCH picks the
# deno compile target). tests/integration/chroot_test.ts rebuilds the same file set with
# packaging/rootfs.sh and runs Prox inside it with chroot.

# ---- build: Deno from npm (pinned by the Makefile), `make compile` for this platform ----------
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile deno.json deno.lock mod.ts config.yaml ./
COPY src ./src
COPY static ./static
COPY packaging ./packaging
ARG TARGETARCH=amd64
# Compile for the platform, assemble the file set, then smoke-test it: the binary starts and
# accepts the shipped config.
RUN case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "Cannot build for TARGETARCH=$TARGETARCH: use amd64 or arm64" >&2; exit 1 ;; \
    esac \
 && make compile TARGETS="$target" \
 && PROX_LISTEN=0.0.0.0:3000 sh packaging/rootfs.sh /rootfs "dist/prox-$target" prox \
 && cd /rootfs && ./prox --version && ./prox validate --config /rootfs/config.yaml

# ---- final: only the file set ----------------------------------------------------------------
FROM scratch
COPY --from=build /rootfs/ /
# Deno's bundled Mozilla roots plus the image's CA file (add your own CA to it to trust it).
ENV DENO_TLS_CA_STORE=mozilla,system \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /
USER 65532:65532
EXPOSE 3000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/prox"]
CMD ["serve", "--config", "/config.yaml"]
