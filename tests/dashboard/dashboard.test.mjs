// dashboard.test.mjs: the cluster dashboard (web/dashboard/, served by
// src/server/routes_dashboard.c) in a real browser against a real cluster.
//
// Starts a throwaway etcd (scripts/etcd.sh, watchdog on this process) and
// three `$QV_CLI serve --cluster` nodes on free loopback ports with an API
// key, creates a collection (6 shards, rf 2) and writes a few points, opens
// /dashboard?key=... of node 1 in Debian's chromium through playwright-core,
// checks that the page is fed by the event stream (GET /cluster/events, the
// badge says "live (stream)"), that the ring shows every live node and every
// copy and the replication table the applied sequence numbers the state
// carries, then kill -9s node 3 and checks that the page marks it dead (and
// its copies dead) within the lease TTL plus a few seconds — through the
// stream: the page never polled. Then fills node 2's stream limit and checks
// that a page opened there falls back to polling and still draws the
// cluster. Saves a screenshot to $QV_DASHBOARD_SCREENSHOT (CTest sets it
// under the build directory; default /tmp). Also checks the static-file
// route: content types, no API key needed, only the three names served.
//
// Every wait polls with a deadline; every process started is stopped in
// after() (and on exit). Skips when etcd is not installed.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {spawn, execFileSync, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {chromium} from 'playwright-core';

const HERE = import.meta.dirname;
const ROOT = path.resolve(HERE, '..', '..');
const CLI = process.env.QV_CLI || path.join(ROOT, 'build', 'quiver');
const SHOT = process.env.QV_DASHBOARD_SCREENSHOT || path.join(os.tmpdir(), 'dashboard-screenshot.png');
const CHROMIUM = '/usr/bin/chromium';
const TTL = 2;
const KEY = 'dash-test-key';
const HAVE_ETCD = spawnSync('sh', ['-c', 'command -v etcd'], {stdio: 'ignore'}).status === 0;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qv-dash-'));
let etcdDir = null;
const nodes = []; // {port, proc, id}
let ctx = null;
let settledEpoch = 0; // the map epoch once the placement settled

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, ms) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const {port} = s.address();
      s.close(() => resolve(port));
    });
  });
}

/* One HTTP call with a raw path (fetch would normalise "..") and a bound. */
function call(port, method, p, body, headers = {'api-key': KEY}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : JSON.stringify(body);
    const req = http.request({host: '127.0.0.1', port, method, path: p, timeout: 10000,
                              headers: {...headers, ...(data ? {'Content-Type': 'application/json'} : {})}},
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let json = null;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({status: res.statusCode, headers: res.headers, text, json});
        });
      });
    req.on('timeout', () => req.destroy(new Error(`${method} ${p}: timeout`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

const state = async (port) => (await call(port, 'GET', '/cluster/state')).json.result;

function stopAll() {
  for (const n of nodes) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGKILL');
  if (etcdDir) {
    spawnSync(path.join(ROOT, 'scripts', 'etcd.sh'), ['stop', etcdDir, '2'], {stdio: 'ignore', timeout: 30000});
    etcdDir = null;
  }
}
process.on('exit', stopAll);

before(async () => {
  if (!HAVE_ETCD) return;
  const out = execFileSync(path.join(ROOT, 'scripts', 'etcd.sh'), ['start', '-o', String(process.pid)],
                           {encoding: 'utf8', timeout: 60000});
  const env = Object.fromEntries(out.split(/\s+/).filter((l) => l.includes('='))
                                    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  etcdDir = env.QV_ETCD_DIR;
  for (let i = 1; i <= 3; i++) {
    const port = await freePort();
    const log = fs.openSync(path.join(tmp, `node${i}.log`), 'w');
    const proc = spawn(CLI, ['serve', '--cluster', '--etcd', env.QV_ETCD_ENDPOINTS, '--port', String(port),
                             '--data-dir', path.join(tmp, `d${i}`), '--cluster-lease-ttl', String(TTL),
                             '--threads', '8', '--api-key', KEY],
                       {stdio: ['ignore', log, log]});
    fs.closeSync(log);
    nodes.push({port, proc, id: null});
  }
  for (const n of nodes) {
    await waitFor(`node on ${n.port}`, async () => (await call(n.port, 'GET', '/cluster')).status === 200, 30000);
  }
  await waitFor('3 members', async () => (await state(nodes[0].port)).members.length === 3, 15000);
  for (const n of nodes) n.id = (await state(n.port)).node_id;
  const r = await call(nodes[0].port, 'PUT', '/collections/dash',
                       {vectors: {size: 4, distance: 'Cosine'}, shard_number: 6, replication_factor: 2});
  assert.equal(r.status, 200, r.text);
  // Placed, and settled: a node whose registration the controller saw late
  // is given its copies by transfer first (each move bumps the epoch).
  await waitFor('placement', async () => {
    const c = (await state(nodes[0].port)).collections.dash;
    if (!(c && c.placed && c.shards.length === 6 && c.moves_left === 0)) return false;
    settledEpoch = c.epoch;
    return true;
  }, 30000);
  // Enough points that every shard gets some (each copy then has a seq).
  const points = Array.from({length: 240}, (_, i) => ({id: i + 1, vector: [1, i, 2, 3]}));
  const w = await call(nodes[0].port, 'PUT', '/collections/dash/points?wait=true', {points});
  assert.equal(w.status, 200, w.text);
});

/* Opens an event stream on `port` and keeps it (until .destroy()); resolves
 * with the response once its headers are in. */
function openStream(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({host: '127.0.0.1', port, path: '/cluster/events', headers: {'api-key': KEY}},
                         (res) => resolve({req, res}));
    req.on('error', reject);
  });
}

async function launch() {
  if (ctx) return ctx;
  const userData = fs.mkdtempSync(path.join(tmp, 'chromium-'));
  ctx = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM, headless: true, viewport: {width: 1280, height: 800}, timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return ctx;
}

after(async () => {
  if (ctx) await ctx.close().catch(() => {});
  for (const n of nodes) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM');
  await Promise.all(nodes.map((n) => waitFor(`node ${n.port} to exit`,
    () => n.proc.exitCode !== null || n.proc.signalCode !== null, 10000).catch(() => n.proc.kill('SIGKILL'))));
  stopAll();
  const bad = fs.readdirSync(tmp).filter((f) => f.endsWith('.log'))
    .filter((f) => /Sanitizer|runtime error:/.test(fs.readFileSync(path.join(tmp, f), 'utf8')));
  if (process.env.QV_KEEP_LOGS) console.error('logs kept in', tmp);
  else fs.rmSync(tmp, {recursive: true, force: true});
  assert.deepEqual(bad, [], 'a sanitizer report in a node log');
});

test('static files: types, public, only three names', {skip: !HAVE_ETCD && 'etcd is not installed'}, async () => {
  const port = nodes[0].port;
  for (const [p, type] of [['/dashboard', 'text/html'], ['/dashboard/', 'text/html'],
                           ['/dashboard/index.html', 'text/html'], ['/dashboard/dashboard.js', 'text/javascript'],
                           ['/dashboard/dashboard.css', 'text/css']]) {
    const r = await call(port, 'GET', p, undefined, {}); // no API key: the page is public
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    assert.ok(r.headers['content-type'].startsWith(type), `${p}: ${r.headers['content-type']}`);
  }
  for (const p of ['/dashboard/..%2F..%2Fetc%2Fpasswd', '/dashboard/../CMakeLists.txt', '/dashboard/.gitignore',
                   '/dashboard/x/index.html', '/dashboard/index.html/x']) {
    const r = await call(port, 'GET', p, undefined, {});
    assert.notEqual(r.status, 200, `${p} must not be served`);
    assert.ok(!r.text.includes('root:'), p);
  }
  assert.equal((await call(port, 'GET', '/cluster/state', undefined, {})).status, 401, 'the state still needs the key');
});

test('the ring shows every live node and follows a kill -9', {skip: !HAVE_ETCD && 'etcd is not installed', timeout: 90000},
     async () => {
  await launch();
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${nodes[0].port}/dashboard?key=${KEY}`, {timeout: 15000});

  const nodeStates = () => page.$$eval('#ring g.node', (gs) =>
    Object.fromEntries(gs.map((g) => [g.dataset.nodeId, g.dataset.state])));
  const ids = nodes.map((n) => n.id);
  await waitFor('3 live nodes on the ring', async () => {
    const s = await nodeStates();
    return ids.every((id) => s[id] === 'live') && Object.keys(s).length === 3;
  }, 10000);
  // Each node's label names its address, not just a colour.
  for (const n of nodes) {
    const label = await page.getAttribute(`#ring g.node[data-node-id="${n.id}"]`, 'aria-label');
    assert.match(label, new RegExp(`127\\.0\\.0\\.1:${n.port}.*live`));
  }
  // 6 shards x 2 copies, one primary per shard, all in sync, on distinct nodes.
  const reps = await page.$$eval('#ring g.replica', (gs) => gs.map((g) => ({...g.dataset})));
  assert.equal(reps.length, 12);
  for (let k = 0; k < 6; k++) {
    const mine = reps.filter((r) => r.shard === String(k));
    assert.equal(mine.length, 2, `shard ${k}`);
    assert.equal(mine.filter((r) => r.primary === 'true').length, 1, `shard ${k} primary`);
    assert.notEqual(mine[0].nodeId, mine[1].nodeId);
    assert.ok(mine.every((r) => r.state === 'insync'));
  }
  assert.equal(await page.getAttribute('#health', 'data-level'), 'ok');
  assert.match(await page.textContent('#colls'), new RegExp(`dash\\s*${settledEpoch}\\s*6\\s*2`));
  // Fed by the event stream, not by polling.
  await waitFor('the stream badge', async () => (await page.getAttribute('#feed', 'data-mode')) === 'stream', 10000);
  assert.equal(await page.textContent('#feed'), 'live (stream)');
  // The replication table draws the applied sequence numbers the state has:
  // at least node 1's own copies after the writes (local.seqs).
  await waitFor('applied seqs of node 1\'s copies', async () => {
    const rows = await page.$$eval(`#replication tr[data-node-id="${ids[0]}"]`,
                                   (trs) => trs.map((tr) => tr.cells[3].textContent));
    return rows.length > 0 && rows.every((t) => /^\d+$/.test(t));
  }, 10000);
  const statesBefore = Number(await page.evaluate(() => document.body.dataset.states || 0));

  const victim = nodes[2];
  const killedAt = Date.now();
  victim.proc.kill('SIGKILL');
  await waitFor('the killed node drawn dead', async () => {
    const s = await nodeStates();
    return s[victim.id] === 'dead' && s[ids[0]] === 'live' && s[ids[1]] === 'live';
  }, (TTL + 5) * 1000);
  const seenDeadAfter = Date.now() - killedAt;
  // The death came through the stream: new state documents, and no poll ever.
  assert.ok(Number(await page.evaluate(() => document.body.dataset.states)) > statesBefore);
  assert.equal(await page.evaluate(() => document.body.dataset.polls), undefined, 'the page polled');
  assert.equal(await page.getAttribute('#feed', 'data-mode'), 'stream');
  await waitFor('its copies drawn dead', async () => {
    const r = await page.$$eval(`#ring g.replica[data-node-id="${victim.id}"]`, (gs) => gs.map((g) => g.dataset.state));
    return r.length > 0 && r.every((x) => x === 'dead');
  }, (TTL + 5) * 1000);
  const log = await page.textContent('#events');
  assert.match(log, new RegExp(`127\\.0\\.0\\.1:${victim.port}\\) left or died`));
  assert.match(log, new RegExp(`map epoch ${settledEpoch} → \\d+`));
  assert.match(await page.textContent(`#nodes tr[data-node-id="${victim.id}"]`), /dead: lease expired/);
  // No shard is led by the dead node any more.
  const primaries = await page.$$eval('#ring g.replica[data-primary="true"]', (gs) => gs.map((g) => g.dataset.nodeId));
  assert.equal(primaries.length, 6);
  assert.ok(!primaries.includes(victim.id));

  fs.mkdirSync(path.dirname(SHOT), {recursive: true});
  await page.screenshot({path: SHOT});
  console.log(`# killed node shown dead ${seenDeadAfter} ms after kill -9 (TTL ${TTL} s); screenshot ${SHOT}`);
  assert.deepEqual(errors, [], 'errors in the page');
});

test('with the stream limit reached the page falls back to polling', {skip: !HAVE_ETCD && 'etcd is not installed', timeout: 60000},
     async () => {
  const port = nodes[1].port;
  const held = [];
  try {
    for (;;) { // node 2 serves 16 streams; the next is refused
      const s = await openStream(port);
      if (s.res.statusCode !== 200) {
        assert.equal(s.res.statusCode, 503);
        s.req.destroy();
        break;
      }
      held.push(s);
      assert.ok(held.length <= 16, 'more than 16 streams accepted');
    }
    assert.equal(held.length, 16);
    await launch();
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${port}/dashboard?key=${KEY}`, {timeout: 15000});
    await waitFor('the polling badge', async () => (await page.getAttribute('#feed', 'data-mode')) === 'polling', 10000);
    await waitFor('a poll that drew the cluster', async () =>
      Number(await page.evaluate(() => document.body.dataset.polls || 0)) > 0 &&
      (await page.$$('#ring g.replica')).length === 12, 10000);
    assert.match(await page.textContent('#feed'), /polling/);
    assert.match(await page.textContent('#events'), /event stream unavailable: polling/);
    // Replication lag from the shapes the state may carry, exact beyond 2^53
    // (sequence numbers start at ms << 16): per replica, per collection, and
    // this node's own local.seqs; unknown or cross-term lag is null.
    const lags = await page.evaluate(() => {
      const base = 117654072714199040n;
      const text = JSON.stringify({node_id: 'a', collections: {
        c: {placed: true, shards: [
          {id: 0, primary: 'a', replicas: [{node: 'a', state: 'insync', seq: 'P0', term: 3},
                                           {node: 'b', state: 'insync', seq: 'B0', term: 3}]},
          {id: 1, primary: 'b', replicas: [{node: 'b', state: 'insync'}, {node: 'a', state: 'insync'}]},
          {id: 2, primary: 'a', replicas: [{node: 'a', state: 'insync'}, {node: 'b', state: 'partial'}]},
          {id: 3, primary: 'a', replicas: [{node: 'a', state: 'insync'}, {node: 'b', state: 'insync'}]}],
            seqs: {1: {b: 'B1', a: 'A1'}, 3: {b: {seq: 'B3', term: 2}}}}},
        local: {seqs: [{collection: 'c', shard: 2, seq: 'P2', term: 1, role: 'primary'},
                       {collection: 'c', shard: 3, seq: 'P3', term: 3, role: 'primary'}]}})
        .replace('"P0"', String(base + 7n)).replace('"B0"', String(base + 2n))
        .replace('"B1"', String(base + 20n)).replace('"A1"', String(base + 19n))
        .replace('"P2"', String(base)).replace('"B3"', String(base)).replace('"P3"', String(base + 1n));
      const st = parseJSON(text);
      const m = copySeqs(st);
      const lag = (k, node) => { const x = copyLag(m, 'c', st.collections.c.shards[k], node).lag;
                                 return x === null ? null : String(x); };
      return [lag(0, 'b'), lag(0, 'a'), lag(1, 'a'), lag(2, 'b'), lag(3, 'b')];
    });
    assert.deepEqual(lags, ['5', '0', '1', null, null]);
    await page.close();
    assert.deepEqual(errors, [], 'errors in the page');
  } finally {
    for (const s of held) s.req.destroy();
  }
});
