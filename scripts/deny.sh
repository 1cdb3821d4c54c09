#!/usr/bin/env bash
# Dependency policy (deny.toml) with cargo-deny: licences, banned/duplicate crates and crate
# sources always; RustSec advisories against the advisory database, fetched from GitHub. When the
# database cannot be fetched, a copy fetched earlier is used (the date of its newest commit is
# printed); with none, the advisory check is reported as not run — it cannot be done without it.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

if ! $CARGO deny --version >/dev/null 2>&1; then
    echo "== installing cargo-deny"
    $CARGO install cargo-deny --locked
fi
$CARGO deny --version

$CARGO deny check bans licenses sources

db_dir=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
# `cargo deny fetch db` exits 0 even when GitHub cannot be reached, so look at what is there.
$CARGO deny fetch db || true
db=$(ls -d "$db_dir"/advisory-db-* 2>/dev/null | head -n 1 || true)
if [ -n "$db" ] && [ -d "$db/crates" ]; then
    echo "advisory database $db, newest advisory commit" \
        "$(git -C "$db" log -1 --format=%cd 2>/dev/null || echo 'of unknown date')"
    $CARGO deny --offline check advisories
else
    echo "ADVISORIES NOT CHECKED: the RustSec database (github.com/RustSec/advisory-db) could not be fetched and no earlier copy exists"
fi
