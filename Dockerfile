# Cairn: a node image. Build: docker build -t cairn .
# Run one node: docker run -p 8080:8080 cairn serve --node-id n1 --advertise-http localhost:8080
# A three-node cluster: docker compose up (docker-compose.yml); Kubernetes:
# deploy/kubernetes/ (README "Deploying").

# --- build: the release binary and the example plugins ---------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-unknown-unknown \
 && cargo build --release --locked -p cairn \
 && cargo build --locked --profile plugin --target wasm32-unknown-unknown \
      -p shopping-cart -p set-union -p counter -p size-router \
 && mkdir -p /out/plugins /out/data \
 && cp target/release/cairn /out/cairn \
 && cp target/wasm32-unknown-unknown/plugin/*.wasm /out/plugins/

# --- run: a small image with no shell, as a non-root user ------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cairn /usr/local/bin/cairn
COPY --from=build /out/plugins/ /usr/share/cairn/plugins/
# The data dir, owned by the image's user (uid 65532), so a fresh volume is writable.
COPY --from=build --chown=65532:65532 /out/data /var/lib/cairn
USER 65532:65532
ENV CAIRN_HTTP=0.0.0.0:8080 \
    CAIRN_PEER=0.0.0.0:9080 \
    CAIRN_DATA_DIR=/var/lib/cairn \
    CAIRN_LOG_FORMAT=json
EXPOSE 8080 9080
VOLUME ["/var/lib/cairn"]
ENTRYPOINT ["/usr/local/bin/cairn"]
CMD ["serve"]
