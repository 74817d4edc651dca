#!/usr/bin/env bash
# Supply-chain check for `make lint`: cargo-deny over Cargo.lock, with the policy in deny.toml
# (allowed licenses, registries, no wildcard versions, RustSec advisories).
#
# Licenses, bans and sources need nothing from the network and always run. The advisory
# database is fetched from GitHub; where it cannot be (a machine whose only network is the
# package registries, as this project's CI), that one check is skipped with a line saying
# so, never silently. cargo-deny is installed with `cargo install --locked` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "supply-chain: installing cargo-deny (cargo install --locked; a few minutes, once)"
  cargo install --locked --quiet cargo-deny
fi

# Every crate in Cargo.lock, other platforms' included, must be on disk for the offline
# check (a build fetches only this platform's): from the crates.io registry, once.
cargo fetch --locked --quiet
cargo deny --offline check licenses bans sources

if timeout 60 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny check --disable-fetch advisories
else
  echo "supply-chain: SKIPPED the RustSec advisory check: its database could not be fetched" \
       "(no network to GitHub here). Licenses, bans and sources were checked."
fi
