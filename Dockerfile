# Multi-stage build of the ragvault binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ragvault

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/ragvault --create-home ragvault
COPY --from=build /src/target/release/ragvault /usr/local/bin/ragvault
USER ragvault
WORKDIR /var/lib/ragvault
ENV RAGVAULT__LISTEN=0.0.0.0:8080 RAGVAULT__DATA_DIR=/var/lib/ragvault RAGVAULT__LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["ragvault"]
CMD ["serve"]
