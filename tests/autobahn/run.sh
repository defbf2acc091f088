#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (RFC 6455 / RFC 7692 conformance) against krait
# serving the echo site next to this script, and fails if any case is not OK (report.py: only
# the three cases Autobahn always rates INFORMATIONAL may be that).
#
#   tests/autobahn/run.sh [CASES]
#
# CASES: comma-separated case patterns, default the CI set "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*";
# "all" for every case (517, with the permessage-deflate sections 12 and 13: ~20 minutes).
# Environment:
#   KRAIT_AUTOBAHN_ENV      the Python 2.7 virtualenv with wstest, made when missing
#                           (default ~/.cache/krait/autobahn27)
#   KRAIT_PY27              the CPython 2.7 to build it with (default: pyenv's 2.7.18)
#   KRAIT_AUTOBAHN_OUT      where the spec, krait's log and reports/ go (default build/autobahn)
#   KRAIT_AUTOBAHN_EXCLUDE  comma-separated case patterns to skip
#   KRAIT_AUTOBAHN_TIMEOUT  seconds wstest may run (default 3600)
#   KRAIT_AUTOBAHN_ACCEPT   comma-separated outcomes to accept besides OK (e.g. NON-STRICT)
#   PYTHON                  the Python with krait installed (default .venv/bin/python, python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cases=${1:-"1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"}
[ "$cases" = all ] && cases="*"
env_dir=${KRAIT_AUTOBAHN_ENV:-$HOME/.cache/krait/autobahn27}
py27=${KRAIT_PY27:-$HOME/.pyenv/versions/2.7.18/bin/python}
out=${KRAIT_AUTOBAHN_OUT:-$root/build/autobahn}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
started=$(date +%s)

# -- the Python 2.7 environment (idempotent: rebuilt only when missing or its pins changed) --
reqs="$here/requirements-py27.txt"
stamp="$env_dir/.krait-requirements"
if [ ! -x "$env_dir/bin/wstest" ] || ! cmp -s "$reqs" "$stamp"; then
    echo "== autobahn: creating $env_dir"
    if [ ! -x "$py27" ]; then
        echo "autobahn: no CPython 2.7 at $py27 (set KRAIT_PY27; e.g. pyenv install 2.7.18)" >&2
        exit 2
    fi
    rm -rf "$env_dir" "$env_dir.tools"
    mkdir -p "$(dirname "$env_dir")" "$out"
    if ! {
        # virtualenv 20.22 dropped support for creating Python 2 environments.
        "$PYTHON" -m venv "$env_dir.tools" &&
        "$env_dir.tools/bin/python" -m pip install -q 'virtualenv<20.22' &&
        "$env_dir.tools/bin/python" -m virtualenv -q -p "$py27" "$env_dir" &&
        "$env_dir/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
    } >"$out/env.log" 2>&1; then
        echo "autobahn: could not create $env_dir:" >&2
        tail -30 "$out/env.log" >&2
        exit 2
    fi
    cp "$reqs" "$stamp"
fi

# -- krait on the echo site ---------------------------------------------------------------------
mkdir -p "$out"
rm -rf "$out/reports"
log="$out/krait.log"
"$PYTHON" -m krait "$here/site" --host 127.0.0.1 --port 0 --workers 1 --access-log off \
    >"$log" 2>&1 </dev/null &
krait_pid=$!
stop_krait() {
    if kill -0 "$krait_pid" 2>/dev/null; then
        kill -TERM "$krait_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$krait_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$krait_pid" 2>/dev/null || true
    fi
    wait "$krait_pid" 2>/dev/null || true
}
trap stop_krait EXIT
port=""
for _ in $(seq 1 300); do
    port=$(sed -n 's|.*serving .* at http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$log" | head -1)
    [ -n "$port" ] && break
    if ! kill -0 "$krait_pid" 2>/dev/null; then
        echo "autobahn: krait did not start:" >&2
        cat "$log" >&2
        exit 2
    fi
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "autobahn: krait did not report its port:" >&2
    cat "$log" >&2
    exit 2
fi

# -- the fuzzing client -------------------------------------------------------------------------
"$PYTHON" - "$here/fuzzingclient.json" "$out/spec.json" "$port" "$cases" \
    "${KRAIT_AUTOBAHN_EXCLUDE:-}" "$out/reports" <<'EOF'
import json
import sys

template, target, port, cases, exclude, outdir = sys.argv[1:]
spec = json.load(open(template))
spec["outdir"] = outdir
spec["servers"][0]["url"] = f"ws://127.0.0.1:{port}/echo"
spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
spec["exclude-cases"] = [c.strip() for c in exclude.split(",") if c.strip()]
json.dump(spec, open(target, "w"), indent=2)
EOF
echo "== autobahn: cases $cases against ws://127.0.0.1:$port/echo (krait pid $krait_pid)"
set +e
(cd "$out" && timeout "${KRAIT_AUTOBAHN_TIMEOUT:-3600}" "$env_dir/bin/wstest" \
    -m fuzzingclient -s "$out/spec.json" >"$out/wstest.log" 2>&1)
wstest_rc=$?
set -e
if [ "$wstest_rc" != 0 ]; then
    echo "autobahn: wstest exited with $wstest_rc" >&2
    tail -30 "$out/wstest.log" >&2
    exit 1
fi
if ! kill -0 "$krait_pid" 2>/dev/null; then
    echo "autobahn: krait died during the run:" >&2
    tail -30 "$log" >&2
    exit 1
fi
set +e
accept=()
IFS=, read -r -a accepted <<<"${KRAIT_AUTOBAHN_ACCEPT:-}"
for outcome in "${accepted[@]}"; do
    [ -n "$outcome" ] && accept+=(--accept "$outcome")
done
"$PYTHON" "$here/report.py" "$out/reports/index.json" "${accept[@]}"
rc=$?
set -e
echo "== autobahn: $(($(date +%s) - started)) s (report: $out/reports/index.html)"
exit "$rc"
