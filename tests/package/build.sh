#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: release binary, then the man page
# and shell completions generated from the CLI definition, then the .deb.
# Prints the path of the package. Installs cargo-deb from crates.io if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! cargo deb --version >/dev/null 2>&1; then
    echo "tests/package/build.sh: installing cargo-deb from crates.io" >&2
    cargo install cargo-deb --locked --quiet
fi
cargo build --release --locked --quiet
bin=target/release/ruchy-serve
mkdir -p target/deb-assets
"$bin" man | gzip -9n >target/deb-assets/ruchy-serve.1.gz
"$bin" man ruchy-serve.toml | gzip -9n >target/deb-assets/ruchy-serve.toml.5.gz
"$bin" completions bash >target/deb-assets/ruchy-serve.bash
"$bin" completions zsh >target/deb-assets/_ruchy-serve
"$bin" completions fish >target/deb-assets/ruchy-serve.fish
cargo deb --no-build --quiet 2>&1 | tail -n 1
