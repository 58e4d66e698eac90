#!/usr/bin/env bash
# Run toggl-client's own mocha tests (shipped in the npm package under test/) against the
# sandbox. Usage: run_toggl_client_suite.sh NODE_PROJECT_DIR   (toggl-client, mocha@10 and
# chai@4 installed there; sandbox facts in the environment, see sandbox_env.sh)
set -u
PROJ="$1"
HERE="$(cd "$(dirname "$0")" && pwd)"
cp "$HERE/toggl_client_sandbox_hook.mjs" "$PROJ/toggl_client_sandbox_hook.mjs"
cd "$PROJ/node_modules/toggl-client" || exit 2
"$PROJ/node_modules/.bin/mocha" --require "$PROJ/toggl_client_sandbox_hook.mjs" --timeout 20000 \
  test/user.test.js test/projects.test.js test/tags.test.js test/time-entries.test.js \
  test/project-users.test.js test/utils.test.js test/smoke-test.js
