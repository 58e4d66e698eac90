// Drive the npm package `toggl-client` (saintedlama) against the toggl-connect sandbox, the way
// its README shows. Run from a directory whose node_modules has toggl-client installed:
//   node drive_toggl_client.mjs     (sandbox facts in the environment, see sandbox_env.sh)
// Exit code 1 if any check fails.
import './toggl_client_sandbox_hook.mjs';
import togglClient from 'toggl-client';
import dayjs from 'dayjs';

const client = togglClient({ apiToken: process.env.TOGGL_API_TOKEN });
const wid = Number(process.env.TOGGL_WORKSPACE_ID);
const results = [];

async function check(name, fn) {
  try {
    const value = await fn();
    results.push([name, true, '']);
    return value;
  } catch (err) {
    results.push([name, false, String(err && err.message ? err.message : err).slice(0, 300)]);
    return undefined;
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(`expectation failed: ${what}`);
}

const stamp = Date.now();
await check('user.current', async () => expect((await client.user.current()).email, 'email'));
await check('user.update fullname', async () => client.user.update({ fullname: 'Sandbox Admin' }));
await check('workspaces.list', async () => expect((await client.workspaces.list()).length > 0, 'non-empty'));
await check('workspaces.get', async () => expect((await client.workspaces.get(wid)).id === wid, 'id'));
await check('workspaces.users', async () => client.workspaces.users(wid));
await check('workspaces.clients', async () => client.workspaces.clients(wid));
await check('workspaces.projects', async () => client.workspaces.projects(wid));
await check('workspaces.tags', async () => client.workspaces.tags(wid));
await check('workspaces.tasks', async () => client.workspaces.tasks(wid));
await check('workspaces.groups', async () => client.workspaces.groups(wid));

const project = await check('projects.create', async () => {
  const p = await client.projects.create(wid, { name: `tc-proj-${stamp}`, active: true });
  expect(p.id && p.workspace_id === wid, 'project id');
  return p;
});
if (project) {
  await check('projects.get', async () => expect((await client.projects.get(wid, project.id)).id === project.id, 'id'));
  await check('projects.list', async () => expect((await client.projects.list(wid)).some((p) => p.id === project.id), 'listed'));
  await check('projects.update', async () => client.projects.update(wid, project.id, { name: `tc-proj-${stamp}-x` }));
  await check('projects.tasks', async () => client.projects.tasks(wid, project.id));
}

const tag = await check('tags.create', async () => {
  const t = await client.tags.create(wid, { name: `tc-tag-${stamp}` });
  expect(t.id && t.name === `tc-tag-${stamp}`, 'tag object');
  return t;
});
if (tag) {
  await check('tags.update', async () => client.tags.update(wid, tag.id, { name: `tc-tag-${stamp}-x` }));
  await check('tags.delete', async () => client.tags.delete(wid, tag.id));
}

const running = await check('timeEntries.start', async () => {
  const te = await client.timeEntries.start({
    workspace_id: wid,
    description: 'driver running',
    start: dayjs().toISOString(),
    duration: -1,
    project_id: project ? project.id : undefined,
  });
  expect(te.id && te.stop === null, 'running entry');
  return te;
});
await check('timeEntries.current', async () => {
  const cur = await client.timeEntries.current();
  expect(cur && running && cur.id === running.id, 'current is the started entry');
});
if (running) {
  await check('timeEntries.update', async () =>
    client.timeEntries.update(running.id, { workspace_id: wid, description: 'driver renamed' }),
  );
  await check('timeEntries.get', async () => expect((await client.timeEntries.get(running.id)).id === running.id, 'found'));
  await check('timeEntries.stop', async () => expect((await client.timeEntries.stop(running)).stop, 'stopped'));
}
const done = await check('timeEntries.create', async () =>
  client.timeEntries.create({
    workspace_id: wid,
    description: 'driver done',
    start: dayjs().subtract(2, 'hour').toISOString(),
    duration: 3600,
  }),
);
await check('timeEntries.list', async () =>
  expect(
    Array.isArray(
      await client.timeEntries.list({
        start_date: dayjs().subtract(7, 'day').format('YYYY-MM-DD'),
        end_date: dayjs().add(1, 'day').format('YYYY-MM-DD'),
      }),
    ),
    'array',
  ),
);
const from = dayjs().subtract(30, 'day').format('YYYY-MM-DD');
await check('reports.details', async () => client.reports.details(wid, { start_date: from }));
await check('reports.detailsAll', async () => client.reports.detailsAll(wid, { start_date: from }));
await check('reports.summary', async () => client.reports.summary(wid, { start_date: from }));
await check('reports.weekly', async () => client.reports.weekly(wid, {}));
// v8 leftovers in toggl-client: these paths do not exist in v9 (client-side, not a sandbox gap).
await check('clients.list (v8 path /clients)', async () => client.clients.list());
if (done) await check('timeEntries.delete (v8 path /time_entries/{id})', async () => client.timeEntries.delete(done.id));
if (project) await check('projects.delete', async () => client.projects.delete(wid, project.id));

const passed = results.filter((r) => r[1]).length;
console.log(`\ntoggl-client: ${passed}/${results.length} checks passed`);
for (const [name, ok, why] of results) console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${ok ? '' : '  -- ' + why}`);
process.exit(passed === results.length ? 0 : 1);
