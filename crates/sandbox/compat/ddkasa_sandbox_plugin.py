"""pytest plugin: point toggl-api-wrapper (ddkasa) at the toggl-connect sandbox.

toggl-api-wrapper keeps its base URLs in class attributes (``BASE_ENDPOINT``), so a user who
wants another server sets them at runtime; this plugin does exactly that before any test runs.
It does not touch the library's files.

Needs TOGGL_SANDBOX_API_URL (e.g. http://127.0.0.1:PORT/api/v9) and TOGGL_SANDBOX_REPORTS_URL
(e.g. http://127.0.0.1:PORT/reports/api/v3); see sandbox_env.sh.
Use: pytest -p ddkasa_sandbox_plugin (with this directory on PYTHONPATH).
"""

import os

from httpx import URL


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def point_at_sandbox() -> None:
    api = _with_slash(os.environ["TOGGL_SANDBOX_API_URL"])
    reports = _with_slash(os.environ["TOGGL_SANDBOX_REPORTS_URL"])

    from toggl_api.meta import TogglEndpoint
    from toggl_api.reports import ReportEndpoint

    TogglEndpoint.BASE_ENDPOINT = api
    ReportEndpoint.BASE_ENDPOINT = reports
    try:
        from toggl_api.asyncio import TogglAsyncEndpoint
        from toggl_api.asyncio._async_reports import AsyncReportEndpoint
    except ImportError:  # the async extra is not installed
        return
    TogglAsyncEndpoint.BASE_ENDPOINT = URL(api)
    AsyncReportEndpoint.BASE_ENDPOINT = URL(reports)


def pytest_configure(config):
    point_at_sandbox()
