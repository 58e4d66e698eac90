// Point the npm package `toggl-client` at the toggl-connect sandbox, at runtime.
//
// toggl-client builds its got instance with a fixed prefixUrl in the constructor and passes the
// Reports prefix per request. A user who wants another server wraps `request` once: the first
// call swaps the instance's prefix for the sandbox URL, and a Reports prefix is rewritten to the
// sandbox's Reports URL. The package's files are not modified.
//
// Needs TOGGL_SANDBOX_API_URL and TOGGL_SANDBOX_REPORTS_URL (see sandbox_env.sh).
// Use: mocha --require /path/to/toggl_client_sandbox_hook.mjs ...   or import it first in a script.
import TogglClient from 'toggl-client/lib/client.js';

const api = process.env.TOGGL_SANDBOX_API_URL;
const reports = process.env.TOGGL_SANDBOX_REPORTS_URL;
if (!api || !reports) {
  throw new Error('TOGGL_SANDBOX_API_URL and TOGGL_SANDBOX_REPORTS_URL must be set');
}

const original = TogglClient.prototype.request;
TogglClient.prototype.request = function request(path, options) {
  if (!this.pointedAtSandbox) {
    this.httpClient = this.httpClient.extend({ prefixUrl: api });
    this.pointedAtSandbox = true;
  }
  if (options && typeof options.prefixUrl === 'string' && options.prefixUrl.includes('/reports/api/v3')) {
    options.prefixUrl = reports;
  }
  return original.call(this, path, options);
};
