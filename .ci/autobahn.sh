#!/usr/bin/env bash
# The Autobahn WebSocket test suite (wstest's fuzzingclient, chapters 1-10)
# against an echo server over confab's own framing (examples/autobahn_echo.rs,
# the code behind /ws). Fails on any case whose behavior or close behavior
# is not OK, NON-STRICT or INFORMATIONAL.
#
# Chapters 12 and 13 (permessage-deflate) are left out: confab negotiates
# no extension. The echo server runs with a 16 MiB message limit, not /ws's
# 64 KiB default, so that chapter 9 (messages up to 16 MiB) exercises the
# framing at every size; /ws's refusal past its limit (1009) has tests of
# its own.
#
# Needs Python 2.7, which the suite requires: $AUTOBAHN_PYTHON, else
# pyenv's 2.7 ($PYENV_ROOT or ~/.pyenv), else python2.7 on the PATH. The
# virtualenv it installs (.ci/autobahn-requirements.txt) is kept under
# target/autobahn/ and reused while the requirements are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$PWD/target/autobahn"
mkdir -p "$WORK"

PY27="${AUTOBAHN_PYTHON:-}"
if [ -z "$PY27" ]; then
    HOME_DIR="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
    PYENV_DIR="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME_DIR/.pyenv")}"
    for p in "$PYENV_DIR"/versions/2.7*/bin/python; do
        if [ -x "$p" ]; then PY27="$p"; fi
    done
fi
if [ -z "$PY27" ]; then PY27="$(command -v python2.7 || true)"; fi
if [ -z "$PY27" ] || ! "$PY27" -c 'import sys; assert sys.version_info[:2] == (2, 7)'; then
    echo "FATAL: no Python 2.7 for the Autobahn suite (set AUTOBAHN_PYTHON)" >&2
    exit 1
fi
echo "python: $PY27"

VENV="$WORK/venv"
REQS=.ci/autobahn-requirements.txt
STAMP="$VENV/.requirements"
if ! cmp -s "$REQS" "$STAMP" || [ ! -x "$VENV/bin/wstest" ]; then
    echo "installing the suite into $VENV"
    rm -rf "$VENV" "$WORK/virtualenv"
    # The last virtualenv that runs on Python 2.7, kept apart from the
    # interpreter's own packages.
    "$PY27" -m pip install --disable-pip-version-check -q \
        --target "$WORK/virtualenv" 'virtualenv==20.15.1'
    PYTHONPATH="$WORK/virtualenv" "$PY27" -m virtualenv -q "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check --no-python-version-warning \
        -q -r "$REQS"
    cp "$REQS" "$STAMP"
fi

cargo build --example autobahn_echo
ECHO_LOG="$WORK/echo.log"
target/debug/examples/autobahn_echo 127.0.0.1:0 $((16 * 1024 * 1024)) >"$ECHO_LOG" 2>&1 &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT
ADDR=""
for _ in $(seq 1 100); do
    ADDR="$(sed -n 's/^listening on //p' "$ECHO_LOG")"
    if [ -n "$ADDR" ]; then break; fi
    if ! kill -0 "$ECHO_PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    echo "FATAL: the echo server did not start" >&2
    cat "$ECHO_LOG" >&2
    exit 1
fi
echo "echo server on $ADDR"

REPORTS="$WORK/reports"
rm -rf "$REPORTS"
cat >"$WORK/spec.json" <<JSON
{
  "outdir": "$REPORTS/servers",
  "servers": [{"agent": "confab", "url": "ws://$ADDR"}],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
START=$SECONDS
# wstest writes a log line per case; its report says what happened.
(cd "$WORK" && timeout 900 "$VENV/bin/wstest" -m fuzzingclient -s spec.json) >"$WORK/wstest.log" 2>&1 || {
    echo "FATAL: wstest failed" >&2
    tail -n 40 "$WORK/wstest.log" >&2
    exit 1
}
echo "wstest took $((SECONDS - START)) s"

# Stricter than the suite on one point: where a case expects the server's
# close frame to carry one of some codes, the suite also takes a close
# frame without a code (or a dropped connection); confab always sends its
# code, so here the code must be one the case expects.
"$VENV/bin/python" - "$REPORTS/servers" <<'PY'
import json, os, sys
from collections import Counter

ACCEPTED = ("OK", "NON-STRICT", "INFORMATIONAL")
with open(os.path.join(sys.argv[1], "index.json")) as f:
    cases = json.load(f)["confab"]

def key(case):
    return [int(part) for part in case.split(".")]

counts = Counter()
failed = []
for case in sorted(cases, key=key):
    r = cases[case]
    counts[r["behavior"]] += 1
    code = r.get("remoteCloseCode")
    if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED:
        failed.append("%s: behavior %s, close %s (close code %s)"
                      % (case, r["behavior"], r["behaviorClose"], code))
        continue
    if r["behaviorClose"] == "INFORMATIONAL":
        continue
    with open(os.path.join(sys.argv[1], r["reportfile"])) as f:
        expected = json.load(f).get("expectedClose", {}).get("closeCode")
    if expected and code not in expected:
        failed.append("%s: close code %s, expected one of %s" % (case, code, expected))
print("autobahn cases by behavior: " + ", ".join(
    "%s %d" % (b, n) for b, n in sorted(counts.items())))
for line in failed:
    print("FAILED " + line)
print("autobahn: %d passed, %d failed" % (len(cases) - len(failed), len(failed)))
if not cases or failed:
    sys.exit(1)
PY
