#!/usr/bin/env bash
# Runs kazoo's own test suite (the sdist of the installed kazoo version, from PyPI)
# against Apache ZooKeeper 3.8 and against ringkeeper (standalone, and through a
# follower of a 3-member ensemble), and fails if ringkeeper fails any test that
# ZooKeeper passes in the same run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ver="$(python3 -c 'import importlib.metadata as m; print(m.version("kazoo"))')"
work="${RK_KAZOO_WORK:-${TMPDIR:-/tmp}/rk-kazoo-upstream}"
mkdir -p "$work"
if [ ! -d "$work/kazoo-$ver" ]; then
    python3 -m pip download -q --no-deps --no-binary :all: -d "$work" "kazoo==$ver"
    tar xzf "$work/kazoo-$ver.tar.gz" -C "$work"
fi
python3 -c 'import objgraph, pytest_timeout, OpenSSL, jks, gevent, eventlet, puresasl' 2>/dev/null ||
    python3 -m pip install -q objgraph pytest-timeout pyopenssl pyjks gevent eventlet pure_sasl
cd "$work/kazoo-$ver"
for backend in zookeeper ringkeeper ringkeeper-follower; do
    echo "kazoo $ver test suite against $backend (log: $work/$backend.log)"
    PYTHONPATH="$here" RK_BACKEND="$backend" python3 -m pytest -p no:cacheprovider -p rk_harness \
        kazoo/tests -q --timeout=90 -o log_cli=false --junitxml="$work/$backend.xml" \
        >"$work/$backend.log" 2>&1 || true
done
status=0
python3 "$here/compare.py" "$work/zookeeper.xml" "$work/ringkeeper.xml" || status=1
echo "ringkeeper through a follower of a 3-member ensemble:"
python3 "$here/compare.py" "$work/zookeeper.xml" "$work/ringkeeper-follower.xml" || status=1
exit $status
