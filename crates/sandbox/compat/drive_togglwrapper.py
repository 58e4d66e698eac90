"""Drive togglwrapper (PyPI `togglwrapper`, a Toggl API v8 client) against the sandbox.

The package's `Toggl(api_token, base_url=..., version=...)` takes the base URL; with
version="v9" it talks to `/api/v9`. It was written for v8, so only calls whose v8 path also
exists in v9 can work; the rest are expected to fail with 404 (client-side, see
COMPATIBILITY.md). Needs the sandbox facts in the environment (source sandbox_env.sh).
"""

import os
import sys

from togglwrapper import Toggl

api = os.environ["TOGGL_SANDBOX_API_URL"]
base = api.rsplit("/", 1)[0]  # .../api
wid = int(os.environ["TOGGL_WORKSPACE_ID"])
toggl = Toggl(os.environ["TOGGL_API_TOKEN"], base_url=base, version="v9")

results = []


def check(name, fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - a driver reports every failure
        results.append((name, False, f"{type(err).__name__}: {err}"[:200]))
        return
    results.append((name, True, ""))


# v8 paths that also exist in v9
check("User.get (/me)", lambda: toggl.User.get())
check("User.get related_data", lambda: toggl.User.get(related_data=True))
check("Workspaces.get (/workspaces)", lambda: toggl.Workspaces.get())
check("Workspaces.get id", lambda: toggl.Workspaces.get(wid))
check("Workspaces.get_clients", lambda: toggl.Workspaces.get_clients(wid))
check("Workspaces.get_projects", lambda: toggl.Workspaces.get_projects(wid))
check("Workspaces.get_tags", lambda: toggl.Workspaces.get_tags(wid))
check("Workspaces.get_users", lambda: toggl.Workspaces.get_users(wid))
check("Workspaces.get_workspace_users", lambda: toggl.Workspaces.get_workspace_users(wid))
check("Workspaces.get_tasks", lambda: toggl.Workspaces.get_tasks(wid))
# v8-only paths (no v9 equivalent at that path)
check("TimeEntries.get_current (v8 /time_entries/current)", lambda: toggl.TimeEntries.get_current())
check(
    "TimeEntries.start (v8 /time_entries/start)",
    lambda: toggl.TimeEntries.start({"time_entry": {"description": "x", "created_with": "togglwrapper"}}),
)
check("Clients.create (v8 /clients)", lambda: toggl.Clients.create({"client": {"name": "tw", "wid": wid}}))

passed = sum(1 for _, ok, _ in results if ok)
print(f"\ntogglwrapper: {passed}/{len(results)} checks passed")
for name, ok, why in results:
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else "  -- " + why))
sys.exit(0 if passed == len(results) else 1)
