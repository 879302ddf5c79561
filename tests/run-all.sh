#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine, installing what it needs
# (idempotently): Apache ZooKeeper 3.8 and its C client shell for the differential and
# client tests, libfuse2 + fusepy for the disk-fault file system, kazoo and pytest, the
# Rust crates. Run as root (the disk-fault tests mount a tmpfs and a FUSE file system),
# or with the packages already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/share/zookeeper/bin/zkCli.sh ] || missing+=(zookeeper)
[ -x /usr/lib/zookeeper/bin/cli_mt ] || missing+=(zookeeper-bin)
command -v java >/dev/null || missing+=(default-jre-headless)
ldconfig -p | grep -q 'libfuse.so.2' || missing+=(libfuse2)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run-all: need Debian packages ${missing[*]}: run as root or install them" >&2
        exit 1
    fi
    echo "run-all: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import kazoo, pytest, fuse, prometheus_client' 2>/dev/null \
    || python3 -m pip install -q kazoo pytest fusepy prometheus_client

# io_uring rings count against locked memory; the server raises its own limit when it
# may, this keeps the shell's children (the servers under test) unconstrained too.
ulimit -l unlimited 2>/dev/null || true

cargo build --release --workspace --locked
cargo test --workspace --release --locked
export RINGKEEPER_BIN="$PWD/target/release/ringkeeper"
# kazoo's own test suite against ZooKeeper, ringkeeper and a follower of a 3-member
# ringkeeper ensemble, compared (about 10 minutes).
tests/kazoo_upstream/run.sh
python3 -m pytest -q -p no:cacheprovider tests/python
# The real-client suites again, through a follower of a 3-member ensemble.
RK_TEST_TARGET=follower python3 -m pytest -q -p no:cacheprovider \
    tests/python/test_kazoo_client.py tests/python/test_kazoo_recipes.py tests/python/test_cli_clients.py
