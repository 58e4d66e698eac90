"""Drive toggl-python (evrone, PyPI `toggl-python`) against the toggl-connect sandbox.

Uses the package the way its README shows; the base URL is the `base_url` constructor argument
(`ReportTimeEntry` has none, so its httpx client's `base_url` is set after construction).
Needs the sandbox facts in the environment (source sandbox_env.sh). Exit code 1 if any check fails.
"""

import os
import sys
import traceback
from datetime import datetime, timedelta, timezone

from toggl_python.auth import BasicAuth, TokenAuth
from toggl_python.entities.report_time_entry import ReportTimeEntry
from toggl_python.entities.user import CurrentUser
from toggl_python.entities.workspace import Workspace
from toggl_python.schemas.base import BulkEditOperation

API = os.environ["TOGGL_SANDBOX_API_URL"]
REPORTS = os.environ["TOGGL_SANDBOX_REPORTS_URL"]
WID = int(os.environ["TOGGL_WORKSPACE_ID"])
auth = TokenAuth(token=os.environ["TOGGL_API_TOKEN"])

results: list[tuple[str, bool, str]] = []


def check(name, fn):
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001 - a driver reports every failure
        results.append((name, False, f"{type(err).__name__}: {err}"[:400]))
        traceback.print_exc()
        return None
    results.append((name, True, ""))
    return value


user = CurrentUser(auth=auth, base_url=API)
ws = Workspace(auth=auth, base_url=API)
reports = ReportTimeEntry(auth=auth)
reports.client.base_url = REPORTS + "/workspace"

check("me", lambda: user.me())
check("me with_related_data", lambda: user.me(with_related_data=True))
check("logged", lambda: user.logged())
check(
    "basic auth (email+password) me",
    lambda: CurrentUser(
        auth=BasicAuth(username=os.environ["TOGGL_EMAIL"], password=os.environ["TOGGL_SANDBOX_PASSWORD"]),
        base_url=API,
    ).me(),
)
check("update_me fullname", lambda: user.update_me(fullname="Sandbox Admin"))
check("features", lambda: user.features())
check("preferences", lambda: user.preferences())
check("me projects", lambda: user.get_projects())
check("me paginated projects", lambda: user.get_paginated_projects(per_page=5))
check("workspaces list", lambda: ws.list())
check("workspace get", lambda: ws.get(WID))
check("workspace update name", lambda: ws.update(WID, name="Sandbox workspace"))

project = check("create project", lambda: ws.create_project(WID, name="tp-proj-" + datetime.now().strftime("%H%M%S%f"), active=True))
check("projects list", lambda: ws.get_projects(WID, active=True))
if project:
    check("get project", lambda: ws.get_project(WID, project.id))
    check("update project", lambda: ws.update_project(WID, project.id, name=project.name + "-x"))
    check(
        "bulk edit projects",
        lambda: ws.bulk_edit_projects(
            WID, [project.id], [BulkEditOperation(operation="replace", field_name="color", field_value="#c7741c")]
        ),
    )

now = datetime.now(tz=timezone.utc).replace(microsecond=0)
running = check(
    "start time entry (duration -1)",
    lambda: ws.create_time_entry(WID, start_datetime=now, created_with="toggl-python-driver", description="run", duration=-1),
)
check("current time entry", lambda: user.get_current_time_entry())
if running:
    check("get time entry", lambda: user.get_time_entry(running.id))
    check("get time entry meta", lambda: user.get_time_entry(running.id, meta=True))
    check("update time entry", lambda: ws.update_time_entry(WID, running.id, description="renamed", tags=["driver"]))
    check("stop time entry", lambda: ws.stop_time_entry(WID, running.id))
done = check(
    "create finished entry",
    lambda: ws.create_time_entry(
        WID,
        start_datetime=now - timedelta(hours=2),
        created_with="toggl-python-driver",
        duration=3600,
        project_id=project.id if project else None,
    ),
)
check("time entries list", lambda: user.get_time_entries())
check("time entries since", lambda: user.get_time_entries(since=int((now - timedelta(days=1)).timestamp())))
check(
    "time entries range",
    lambda: user.get_time_entries(start_date=now - timedelta(days=7), end_date=now + timedelta(days=1)),
)
check("time entries before", lambda: user.get_time_entries(before=now + timedelta(days=1)))
if done:
    check(
        "bulk edit time entries",
        lambda: ws.bulk_edit_time_entries(
            WID, [done.id], [BulkEditOperation(operation="replace", field_name="description", field_value="bulk")]
        ),
    )
check(
    "report search",
    lambda: reports.search(WID, start_date=(now - timedelta(days=30)).date(), end_date=(now + timedelta(days=1)).date()),
)
check(
    "report search page 2",
    lambda: reports.search(WID, start_date=(now - timedelta(days=30)).date(), end_date=(now + timedelta(days=1)).date(), page_size=2, page_number=1),
)
if done:
    check("delete time entry", lambda: ws.delete_time_entry(WID, done.id))
if running:
    check("delete stopped entry", lambda: ws.delete_time_entry(WID, running.id))
if project:
    check("delete project", lambda: ws.delete_project(WID, project.id))

passed = sum(1 for _, ok, _ in results if ok)
print(f"\ntoggl-python: {passed}/{len(results)} checks passed")
for name, ok, why in results:
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else "  -- " + why))
sys.exit(0 if passed == len(results) else 1)
