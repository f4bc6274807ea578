# Sourced by the setup scripts (run from the repository root): `as_root CMD…` runs a command as
# root (directly, or through sudo), and $channel is the pinned toolchain of rust-toolchain.toml.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
channel=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
