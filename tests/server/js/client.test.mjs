// client.test.mjs: the core Qdrant flow, named vectors and snapshots
// through the official @qdrant/js-client-rest (pinned in package.json)
// against a real `quiver serve`, with Node's built-in test runner
// (`node --test`).
//
// The server is `$QV_CLI serve` when that accepts `serve`, else
// `$QV_TEST_BIN/helper_serve`; it gets a free loopback port and a fresh
// temporary data directory, and is stopped with SIGTERM at the end (exit
// status 0 expected).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { QdrantClient } from '@qdrant/js-client-rest';

let proc;
let dataDir;
let client;
let stderr = '';

function serverCommand() {
  const cli = process.env.QV_CLI;
  if (cli && existsSync(cli) && spawnSync(cli, ['serve', '--help']).status === 0)
    return [cli, ['serve']];
  if (!process.env.QV_TEST_BIN) throw new Error('set QV_TEST_BIN or QV_CLI');
  return [join(process.env.QV_TEST_BIN, 'helper_serve'), []];
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(port) {
  // Ends early when ready; a server that never answers fails the test.
  for (let i = 0; i < 1200; i++) {
    if (proc.exitCode !== null) throw new Error(`server exited ${proc.exitCode}: ${stderr}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.status === 200 && stderr.includes('listening on')) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`server not ready: ${stderr}`);
}

before(async () => {
  const port = await freePort();
  dataDir = mkdtempSync(join(tmpdir(), 'qv-js-'));
  const [bin, pre] = serverCommand();
  proc = spawn(bin, [...pre, '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr.on('data', (d) => (stderr += d.toString()));
  await waitReady(port);
  client = new QdrantClient({ url: `http://127.0.0.1:${port}` });
});

after(async () => {
  if (proc && proc.exitCode === null) {
    const done = new Promise((res) => proc.once('exit', res));
    proc.kill('SIGTERM');
    const code = await done;
    assert.equal(code, 0, `server exit status ${code}: ${stderr}`);
  }
  assert.ok(!/AddressSanitizer|runtime error:/.test(stderr), stderr);
  rmSync(dataDir, { recursive: true, force: true });
});

const vec = (i) => [Math.cos(i), Math.sin(i), (i % 3) - 1, 0.5];

test('the official client runs the core flow', async () => {
  const version = await client.versionInfo();
  assert.equal(version.title, 'qdrant - vector search engine');

  assert.equal(await client.createCollection('docs', { vectors: { size: 4, distance: 'Cosine' } }), true);
  assert.deepEqual(await client.collectionExists('docs'), { exists: true });
  const { collections } = await client.getCollections();
  assert.ok(collections.some((c) => c.name === 'docs'));

  const points = [];
  for (let i = 1; i <= 30; i++)
    points.push({ id: i, vector: vec(i), payload: { n: i, color: i % 2 ? 'red' : 'blue', meta: { i } } });
  points.push({ id: '3f2504e0-4f89-11d3-9a0c-0305e82c3301', vector: vec(99), payload: { color: 'green' } });
  const up = await client.upsert('docs', { wait: true, points });
  assert.equal(up.status, 'completed');

  const info = await client.getCollection('docs');
  assert.equal(info.points_count, 31);
  assert.equal(info.config.params.vectors.size, 4);

  const hits = await client.search('docs', {
    vector: vec(7),
    limit: 5,
    filter: { must: [{ key: 'color', match: { value: 'red' } }] },
    with_payload: true,
  });
  assert.equal(hits.length, 5);
  assert.equal(hits[0].id, 7);
  assert.ok(hits[0].score > 0.999);
  assert.ok(hits.every((h) => h.payload.color === 'red'));

  const q = await client.query('docs', { query: vec(8), limit: 3, with_payload: ['n'] });
  assert.equal(q.points[0].id, 8);
  assert.deepEqual(q.points[0].payload, { n: 8 });

  const page1 = await client.scroll('docs', { limit: 20, with_payload: false });
  assert.equal(page1.points.length, 20);
  assert.equal(page1.next_page_offset, 21);
  const page2 = await client.scroll('docs', { limit: 20, offset: page1.next_page_offset });
  assert.equal(page2.points.length, 11);
  assert.equal(page2.next_page_offset, null);
  assert.equal(page2.points.at(-1).id, '3f2504e0-4f89-11d3-9a0c-0305e82c3301');

  const got = await client.retrieve('docs', { ids: [2, 3, 1000], with_vector: true });
  assert.deepEqual(got.map((p) => p.id), [2, 3]);
  assert.equal(got[0].payload.meta.i, 2);
  assert.equal(got[0].vector.length, 4);

  assert.equal((await client.count('docs', { exact: true })).count, 31);
  assert.equal((await client.count('docs', { filter: { must: [{ key: 'color', match: { value: 'blue' } }] } })).count, 15);

  await client.setPayload('docs', { points: [1], payload: { tag: 'x' } });
  assert.equal((await client.retrieve('docs', { ids: [1] }))[0].payload.tag, 'x');

  const del = await client.delete('docs', { points: [1, 2, 3] });
  assert.ok(['acknowledged', 'completed'].includes(del.status));
  await client.delete('docs', { wait: true, filter: { must: [{ key: 'color', match: { value: 'green' } }] } });
  assert.equal((await client.count('docs')).count, 27);

  await assert.rejects(client.getCollection('absent'), (e) => e.status === 404);

  assert.equal(await client.deleteCollection('docs'), true);
  assert.deepEqual(await client.collectionExists('docs'), { exists: false });
});

test('named vectors through the official client', async () => {
  await client.createCollection('multi', {
    vectors: { img: { size: 4, distance: 'Dot' }, txt: { size: 3, distance: 'Cosine' } },
  });
  const info = await client.getCollection('multi');
  assert.deepEqual(info.config.params.vectors, {
    img: { size: 4, distance: 'Dot' },
    txt: { size: 3, distance: 'Cosine' },
  });
  await client.upsert('multi', {
    wait: true,
    points: [
      { id: 1, vector: { img: [1, 0, 0, 0], txt: [0, 1, 0] }, payload: { k: 'a' } },
      { id: 2, vector: { img: [0, 1, 0, 0] }, payload: { k: 'b' } },
      { id: 3, vector: { img: [0.9, 0.1, 0, 0], txt: [1, 0, 0] }, payload: { k: 'c' } },
    ],
  });
  const hits = await client.search('multi', { vector: { name: 'img', vector: [1, 0, 0, 0] }, limit: 3 });
  assert.deepEqual(hits.map((h) => h.id), [1, 3, 2]);
  const q = await client.query('multi', { query: [1, 0, 0], using: 'txt', limit: 5, with_vector: ['txt'] });
  assert.deepEqual(q.points.map((p) => p.id), [3, 1]);
  assert.deepEqual(Object.keys(q.points[0].vector), ['txt']);
  await client.updateVectors('multi', { points: [{ id: 2, vector: { txt: [0, 0, 1] } }] });
  const [two] = await client.retrieve('multi', { ids: [2], with_vector: true });
  assert.deepEqual(two.vector, { img: [0, 1, 0, 0], txt: [0, 0, 1] });
  assert.equal(two.payload.k, 'b');
  await client.deleteVectors('multi', { points: [2], vector: ['txt'] });
  const [again] = await client.retrieve('multi', { ids: [2], with_vector: true });
  assert.deepEqual(Object.keys(again.vector), ['img']);
  await assert.rejects(
    client.search('multi', { vector: { name: 'nope', vector: [1, 0] }, limit: 1 }),
    (e) => e.status === 400 && /Not existing vector name error: nope/.test(JSON.stringify(e.data)),
  );
});

test('snapshots through the official client', async () => {
  await client.createCollection('snap', { vectors: { size: 2, distance: 'Dot' } });
  await client.upsert('snap', { wait: true, points: [1, 2, 3].map((i) => ({ id: i, vector: [i, 1] })) });
  const desc = await client.createSnapshot('snap');
  assert.match(desc.name, /^snap-.*\.snapshot$/);
  assert.match(desc.checksum, /^[0-9a-f]{64}$/);
  assert.deepEqual((await client.listSnapshots('snap')).map((s) => s.name), [desc.name]);
  await client.delete('snap', { wait: true, points: [1, 2] });
  const location = `file://${join(dataDir, 'snapshots', 'snap', desc.name)}`;
  assert.equal(await client.recoverSnapshot('snap', { location, checksum: desc.checksum }), true);
  assert.equal((await client.count('snap')).count, 3);
  assert.equal(await client.deleteSnapshot('snap', desc.name), true);
  assert.deepEqual(await client.listSnapshots('snap'), []);
});
