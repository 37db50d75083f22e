# ragvault from source: the release binary, and the all-MiniLM-L6-v2 files fetched (and SHA-256 checked) by
# scripts/fetch-model.sh, on a slim Debian with a fixed unprivileged user (uid 10001: docker-compose.yml hands
# it the Vault secret_id file).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ragvault

FROM python:3.11-slim-bookworm AS model
COPY scripts/fetch-model.sh /fetch-model.sh
RUN RAGVAULT_MODEL_DIR=/models/all-MiniLM-L6-v2 bash /fetch-model.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/ragvault --create-home ragvault
COPY --from=build /src/target/release/ragvault /usr/local/bin/ragvault
COPY --from=model /models /opt/ragvault/models
USER ragvault
WORKDIR /var/lib/ragvault
ENV RAGVAULT__LISTEN=0.0.0.0:8080 RAGVAULT__DATA_DIR=/var/lib/ragvault RAGVAULT__LOG__FORMAT=json \
    RAGVAULT__EMBEDDING__MODEL_DIR=/opt/ragvault/models/all-MiniLM-L6-v2
EXPOSE 8080
ENTRYPOINT ["ragvault"]
CMD ["serve"]
