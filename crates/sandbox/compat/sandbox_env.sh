#!/usr/bin/env bash
# Start the toggl-connect sandbox in the background and export its facts as environment
# variables (TOGGL_API_TOKEN, TOGGL_WORKSPACE_ID, ... and TOGGL_SANDBOX_*_URL).
# Usage: source sandbox_env.sh [path-to-toggl-connect-binary]
# Stop it with: kill "$TOGGL_SANDBOX_PID"
BIN="${1:-${TOGGL_CONNECT_BIN:-toggl-connect}}"
FACTS_FILE="$(mktemp)"
"$BIN" sandbox --seed small --no-rate-limit --listen 127.0.0.1:0 >"$FACTS_FILE" 2>/dev/null &
TOGGL_SANDBOX_PID=$!
export TOGGL_SANDBOX_PID
for _ in $(seq 1 100); do
  if [ -s "$FACTS_FILE" ]; then break; fi
  sleep 0.1
done
eval "$(python3 - "$FACTS_FILE" <<'PY'
import json, shlex, sys
f = json.loads(open(sys.argv[1]).readline())
out = {
    "TOGGL_SANDBOX_API_URL": f["api_url"],
    "TOGGL_SANDBOX_WEBHOOKS_URL": f["webhooks_url"],
    "TOGGL_SANDBOX_REPORTS_URL": f["reports_url"],
    "TOGGL_API_TOKEN": f["api_token"],
    "TOGGL_EMAIL": f["email"],
    "TOGGL_SANDBOX_PASSWORD": f["password"],
    "TOGGL_USER_ID": f["user_id"],
    "TOGGL_WORKSPACE_ID": f["workspace_id"],
    "TOGGL_ORGANIZATION_ID": f["organization_id"],
}
for k, v in out.items():
    print(f"export {k}={shlex.quote(str(v))}")
PY
)"
rm -f "$FACTS_FILE"
echo "sandbox pid $TOGGL_SANDBOX_PID at $TOGGL_SANDBOX_API_URL" >&2
