# The two commands of the quick start: `make run` and `make test`.
CARGO_TARGET_DIR ?= /var/tmp/ragvault-target
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ragvault
RAGVAULT_MODEL_DIR ?= /var/tmp/ragvault-models/all-MiniLM-L6-v2
export CARGO_TARGET_DIR DATABASE_URL RAGVAULT_MODEL_DIR

.PHONY: run test lint fmt build

## Run the service on the embedded default (local keyring in ./data, Postgres on 127.0.0.1:5432).
run:
	scripts/ensure-postgres.sh
	scripts/ensure-database.sh
	scripts/fetch-model.sh
	cargo run --release --bin ragvault -- serve

## Run every test (unit, end-to-end through HTTP against real Postgres and OpenBao, CLI), then the fault
## scenarios (benches/src/bin/scenarios.rs) in their short form against the debug build.
test:
	scripts/ensure-postgres.sh
	scripts/ensure-openbao.sh
	scripts/fetch-model.sh
	scripts/ensure-openai-sdk.sh
	scripts/ensure-chromium.sh
	cargo test --workspace --all-targets --no-fail-fast
	$(CARGO_TARGET_DIR)/debug/scenarios --quick --out $${CI_OUTPUT_DIR:-$${TMPDIR:-/tmp}}/scenarios-quick.md
	scripts/fuzz.sh $${RAGVAULT_FUZZ_SECONDS:-20}
	@if [ -z "$$QDRANT_URL" ]; then echo "NOTE: QDRANT_URL is not set: the Qdrant backend tests (crates/search/tests/qdrant.rs) were skipped, not run."; fi

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/check-compose.sh

fmt:
	cargo fmt --all

build:
	cargo build --release --bin ragvault
