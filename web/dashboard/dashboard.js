/* dashboard.js: the live cluster dashboard (issue 5; docs/cluster.md,
 * "Dashboard"). Follows the state of the node that served the page and
 * redraws: the shard ring of one collection (SVG), the nodes with lease
 * time left and load against the cap, the collections with their map epoch,
 * transfers, replication lag per copy, etcd health, and an event log made
 * of the node's own events plus the differences between successive states.
 *
 * Feeds: the page listens to GET /cluster/events (Server-Sent Events,
 * src/server/cluster_events.c) with an EventSource: a `state` event carries
 * the document whenever it changes, an `event` event each line of the
 * node's event ring (its id lets a reconnect resume). When the stream
 * cannot be had (refused, 503 at the stream limit, an old server, two
 * failures in a row) the page polls GET /cluster/state once a second
 * instead and tries the stream again every 15 s. The badge #feed says
 * which: data-mode "stream" ("live (stream)"), "polling", "reconnecting".
 * EventSource cannot send headers, so the API key goes as ?api-key=.
 *
 * Owns only the browser side; the state document is routes_cluster.c's
 * (h_cluster_state). Placement is rendezvous hashing, not a token ring, so
 * the ring drawn is a ring of *shards* (shard k at angle k/P) with their
 * replica copies, and the nodes sit inside it, linked to the copies they
 * hold.
 *
 * A node that was seen (as a member or in a shard map) and whose member key
 * is gone is drawn dead ("lease expired"): etcd removes the key when the
 * lease lapses, so absence is the liveness signal.
 *
 * Hooks for tests and assistive tools: every node in the SVG is a <g
 * class="node"> with data-node-id, data-addr, data-state (live | expiring |
 * fenced | dead) and an aria-label saying the same in words; every copy is a
 * <g class="replica"> with data-shard, data-node-id, data-state and
 * data-primary. document.body.dataset.polls counts successful polls,
 * document.body.dataset.states the state documents the stream delivered.
 *
 * Replication lag: /cluster/state may carry applied sequence numbers per
 * copy (replicas[].seq, a collection's "seqs", a top-level "seqs", or this
 * node's own local.seqs); the Replication table shows, for every copy of
 * the selected collection, its applied sequence number and its lag behind
 * the shard's primary (rows carry data-shard, data-node-id, data-lag), and
 * says so when the document has no such numbers.
 *
 * Shard transfers: a copy in state "partial" is being filled by its
 * shard's primary (drawn amber, its link animated); the Transfers table
 * shows each transfer's progress from the source's report (points copied
 * of the total, rate, lag = points still to copy). The node's own event
 * ring (controller decisions, transfers it ran) is fetched with
 * ?events_after= and merged into the log, marked with the node's name.
 *
 * Without --cluster the stream's state says {"enabled": false,
 * "single_node": {"collections"}}: the page lists the local collections
 * and logs their creation and removal.
 *
 * Invariants: at most one feed runs (a stream, or one poll in flight with
 * the next scheduled when it ends); every string from the server reaches
 * the DOM escaped. */
'use strict';

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const STREAM_RETRY_MS = 15000; /* back from polling to the stream */
const MAX_EVENTS = 300;
const SVG_NS = 'http://www.w3.org/2000/svg';

const params = new URLSearchParams(location.search);
let apiKey = params.get('key') || '';
let prev = null;          /* the last state that answered */
let selected = params.get('collection') || '';
let pollOk = 0;
let failing = false;
const known = new Map();  /* node_id -> {addr, short} for every node ever seen */
let nextShort = 1;
let eventsAfter = 0;      /* the serving node's last event seq shown */
let servingNode = '';     /* node_id of the node that serves the page */
let statesSeen = 0;       /* state documents the stream delivered */
let es = null;            /* the EventSource while the stream is the feed */
let pollTimer = null;     /* the next poll while polling is the feed */
let streamRetry = null;
let streamErrors = 0;     /* stream errors since it last opened */

const $ = (id) => document.getElementById(id);

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) =>
    ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
}

/* JSON.parse that keeps big integers exact: sequence numbers start at
 * (ms << 16), beyond 2^53, where a double rounds to a multiple of 16. Every
 * integer of 16 digits or more outside a string becomes a string (copySeqs
 * reads them as BigInts); the page uses no other number that large. */
function parseJSON(text) {
  let out = '', from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') { /* skip the string, escapes included */
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      continue;
    }
    if ((c >= '0' && c <= '9') || c === '-') { /* a whole number token */
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j])) j++;
      if (/^-?\d{16,}$/.test(text.slice(i, j))) {
        out += `${text.slice(from, i)}"${text.slice(i, j)}"`;
        from = j;
      }
      i = j - 1;
    }
  }
  return JSON.parse(out + text.slice(from));
}

function clock() {
  return new Date().toTimeString().slice(0, 8);
}

/* ---- event log --------------------------------------------------------------- */

function logEvent(text, level) {
  const li = document.createElement('li');
  li.textContent = `${clock()}  ${text}`;
  if (level) li.className = level;
  const ol = $('events');
  ol.insertBefore(li, ol.firstChild);
  while (ol.children.length > MAX_EVENTS) ol.removeChild(ol.lastChild);
}

/* ---- node names: N1, N2, ... in the order first seen (by address) ------------- */

function learnNodes(st) {
  const fresh = [];
  for (const m of st.members || [])
    if (!known.has(m.node_id)) fresh.push({id: m.node_id, addr: m.addr});
  for (const c of Object.values(st.collections || {}))
    for (const sh of c.shards || [])
      for (const r of sh.replicas || [])
        if (!known.has(r.node) && !fresh.some((f) => f.id === r.node))
          fresh.push({id: r.node, addr: ''});
  fresh.sort((a, b) => (a.addr || '~').localeCompare(b.addr || '~', 'en', {numeric: true}));
  for (const f of fresh) known.set(f.id, {addr: f.addr, short: `N${nextShort++}`});
  for (const m of st.members || []) if (m.addr) known.get(m.node_id).addr = m.addr;
}

function nm(id) {
  const k = known.get(id);
  return k ? k.short : `?${String(id).slice(-4)}`;
}

function describe(id) {
  const k = known.get(id);
  return k && k.addr ? `${k.short} (${k.addr})` : nm(id);
}

/* State of every known node: live | expiring | fenced | dead, with words. */
function nodeStates(st) {
  const out = new Map();
  const members = new Map((st.members || []).map((m) => [m.node_id, m]));
  for (const [id] of known) {
    const m = members.get(id);
    if (!m) {
      out.set(id, {state: 'dead', text: 'dead: lease expired', left: 0});
    } else if ((st.draining || []).includes(id)) {
      out.set(id, {state: 'draining', text: 'draining: copies moving off', left: m.lease_ttl_left_s});
    } else if (id === st.node_id && st.fenced) {
      out.set(id, {state: 'fenced', text: 'fenced: lost its lease', left: m.lease_ttl_left_s});
    } else if (m.lease_ttl_left_s === 0) {
      out.set(id, {state: 'expiring', text: 'lease expiring', left: 0});
    } else {
      const left = m.lease_ttl_left_s;
      out.set(id, {state: 'live', text: left < 0 ? 'live (lease unknown)' : 'live', left});
    }
  }
  return out;
}

/* ---- differences between two states ----------------------------------------- */

function diff(a, b) {
  if (a === null) {
    logEvent(`connected to ${describe(b.node_id)}; ${(b.members || []).length} live node(s), ` +
             `controller ${b.controller ? describe(b.controller) : 'none'}`);
    return;
  }
  const am = new Set((a.members || []).map((m) => m.node_id));
  const bm = new Set((b.members || []).map((m) => m.node_id));
  for (const id of bm) if (!am.has(id)) logEvent(`node ${describe(id)} joined`);
  for (const id of am)
    if (!bm.has(id)) logEvent(`node ${describe(id)} left or died: its lease expired`, 'bad');
  if (a.controller !== b.controller)
    logEvent(`controller ${a.controller ? nm(a.controller) : 'none'} → ` +
             `${b.controller ? nm(b.controller) : 'none'}`, b.controller ? 'warn' : 'bad');
  if (a.fenced !== b.fenced)
    logEvent(b.fenced ? `${nm(b.node_id)} is fenced (lost its etcd lease)`
                      : `${nm(b.node_id)} registered again`, b.fenced ? 'bad' : 'warn');
  const ac = a.collections || {}, bc = b.collections || {};
  for (const name of Object.keys(bc)) {
    const x = ac[name], y = bc[name];
    if (!x) {
      logEvent(`collection ${name} created: ${y.shard_number} shards × rf ` +
               `${y.replication_factor}, epoch ${y.epoch}`);
      continue;
    }
    if (x.epoch !== y.epoch) logEvent(`${name}: map epoch ${x.epoch} → ${y.epoch}`, 'warn');
    const xs = x.shards || [], ys = y.shards || [];
    for (let k = 0; k < ys.length; k++) {
      const p = xs[k], q = ys[k];
      if (!p) continue;
      if (p.primary !== q.primary)
        logEvent(`${name}/S${k}: primary ${nm(p.primary)} → ${nm(q.primary)} (term ${q.term})`,
                 'warn');
      const was = new Map((p.replicas || []).map((r) => [r.node, r.state]));
      for (const r of q.replicas || []) {
        const w = was.get(r.node);
        if (w === undefined) logEvent(`${name}/S${k}: new copy on ${nm(r.node)} (${r.state})`);
        else if (w !== r.state)
          logEvent(`${name}/S${k}: copy on ${nm(r.node)} ${w} → ${r.state}`,
                   r.state === 'dead' ? 'bad' : '');
        was.delete(r.node);
      }
      for (const [node] of was) logEvent(`${name}/S${k}: copy on ${nm(node)} removed`);
    }
  }
  for (const name of Object.keys(ac))
    if (!bc[name]) logEvent(`collection ${name} removed`, 'warn');
}

/* ---- the ring ------------------------------------------------------------------ */

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function polar(r, angle) {
  return [280 + r * Math.cos(angle), 280 + r * Math.sin(angle)];
}

function drawRing(st, states, seqs) {
  const svg = $('ring');
  while (svg.lastChild && svg.lastChild.tagName !== 'desc') svg.removeChild(svg.lastChild);
  el('circle', {cx: 280, cy: 280, r: 200, class: 'ring-base'}, svg);
  const coll = (st.collections || {})[selected];
  const ids = [...known.keys()];
  /* nodes inside the ring */
  const nodePos = new Map();
  const rn = ids.length > 1 ? 95 : 0;
  ids.forEach((id, i) => {
    nodePos.set(id, polar(rn, -Math.PI / 2 + (2 * Math.PI * i) / Math.max(ids.length, 1)));
  });
  const links = el('g', {class: 'links'}, svg);
  const shards = coll && coll.placed ? coll.shards : [];
  const P = shards.length;
  const chipR = P > 24 ? 6 : 11;
  shards.forEach((sh, k) => {
    const a = -Math.PI / 2 + (2 * Math.PI * k) / P;
    const [sx, sy] = polar(238, a);
    const g = el('g', {class: 'shard', 'data-shard': k,
                       'aria-label': `shard ${k}, term ${sh.term}, primary ${nm(sh.primary)}`}, svg);
    if (P <= 24) {
      el('rect', {x: sx - 26, y: sy - 11, width: 52, height: 22, rx: 5}, g);
      el('text', {x: sx, y: sy}, g, `S${k} t${sh.term}`);
    } else {
      el('text', {x: sx, y: sy}, g, `${k}`);
    }
    const reps = sh.replicas || [];
    reps.forEach((rp, j) => {
      const off = (j - (reps.length - 1) / 2) * (2.6 * chipR + 4) / 200;
      const [cx, cy] = polar(200, a + off);
      const isPrimary = rp.node === sh.primary;
      const cls = `replica ${rp.state}${isPrimary ? ' primary' : ''}`;
      const lag = copyLag(seqs, selected, sh, rp.node);
      const label = `shard ${k} copy on ${describe(rp.node)}: ${rp.state}` +
                    (isPrimary ? ', primary' : '') +
                    (lag.seq !== null ? `, applied seq ${lag.seq}` : '') +
                    (lag.lag !== null && !isPrimary ? `, lag ${lag.lag}` : '');
      const rg = el('g', {class: cls, 'data-shard': k, 'data-node-id': rp.node,
                          'data-state': rp.state, 'data-primary': isPrimary ? 'true' : 'false',
                          'data-lag': lag.lag === null ? '' : String(lag.lag),
                          'aria-label': label}, svg);
      el('title', {}, rg, label);
      el('circle', {cx, cy, r: chipR}, rg);
      /* the node's number, with P on the primary: identity and role in text */
      if (chipR > 8) el('text', {x: cx, y: cy}, rg, (isPrimary ? 'P' : '') + nm(rp.node).slice(1));
      const np = nodePos.get(rp.node);
      if (np) {
        el('line', {x1: cx, y1: cy, x2: np[0], y2: np[1],
                    class: `link${isPrimary ? ' primary' : ''}${rp.state === 'dead' ? ' dead' : ''}` +
                           `${rp.state === 'partial' ? ' partial' : ''}`},
           links);
      }
    });
  });
  for (const id of ids) {
    const s = states.get(id);
    const [x, y] = nodePos.get(id);
    const label = `node ${describe(id)}: ${s.text}` +
                  (id === st.controller ? ', controller' : '') +
                  (id === st.node_id ? ', serving this page' : '');
    const g = el('g', {class: `node ${s.state}`, 'data-node-id': id,
                       'data-addr': (known.get(id) || {}).addr || '', 'data-state': s.state,
                       role: 'img', 'aria-label': label}, svg);
    el('title', {}, g, label);
    el('circle', {cx: x, cy: y, r: 31}, g);
    el('text', {x, y: y - 8}, g, nm(id) + (id === st.controller ? ' ★' : ''));
    el('text', {x, y: y + 9, class: 'sub'}, g,
       s.state === 'dead' ? 'DEAD' : s.state === 'live' ? (s.left >= 0 ? `${s.left}s` : 'live')
                                                          : s.state);
  }
  if (!coll) {
    el('text', {x: 280, y: 530, class: 'center-label'}, svg,
       Object.keys(st.collections || {}).length ? '' : 'no distributed collection yet');
  } else if (!coll.placed) {
    el('text', {x: 280, y: 530, class: 'center-label'}, svg, `${selected}: waiting for placement`);
  }
}

/* ---- tables -------------------------------------------------------------------- */

function bar(frac, cls) {
  const w = Math.max(0, Math.min(1, frac)) * 100;
  return `<span class="bar ${cls || ''}"><span style="width:${w.toFixed(0)}%"></span></span>`;
}

function drawTables(st, states) {
  const coll = (st.collections || {})[selected];
  const ttl = st.lease_ttl_s || 1;
  const rows = [];
  for (const [id, s] of states) {
    const k = known.get(id);
    const load = coll && coll.load ? coll.load[id] || 0 : 0;
    const cap = coll ? coll.load_cap : 0;
    const lease = s.state === 'dead' ? 'expired'
      : s.left >= 0 ? `${bar(s.left / ttl, s.left / ttl < 0.34 ? 'low' : '')}${s.left} s` : '?';
    const loadCell = coll ? `${bar(cap ? load / cap : 0, load > cap ? 'over' : '')}${load} / ${cap}`
                          : '–';
    const tags = (id === st.controller ? ' ★ctl' : '') + (id === st.node_id ? ' (this)' : '');
    rows.push(`<tr data-node-id="${esc(id)}"><td title="${esc(id)}">${esc(k.short)}${esc(tags)}</td>` +
              `<td>${esc(k.addr || '?')}</td><td class="state-${s.state}">${esc(s.text)}</td>` +
              `<td>${lease}</td><td>${loadCell}</td></tr>`);
  }
  $('nodes').tBodies[0].innerHTML = rows.join('');
  const crow = [];
  for (const [name, c] of Object.entries(st.collections || {})) {
    let dead = 0;
    for (const sh of c.shards || []) for (const r of sh.replicas || []) if (r.state === 'dead') dead++;
    crow.push(`<tr><td>${esc(name)}</td><td>${esc(c.epoch)}</td><td>${esc(c.shard_number)}</td>` +
              `<td>${esc(c.replication_factor)}</td><td>${esc(c.load_cap)}</td>` +
              `<td class="${dead ? 'state-dead' : ''}">${dead}</td></tr>`);
  }
  $('colls').tBodies[0].innerHTML = crow.join('') || '<tr><td colspan="6">none</td></tr>';
  drawTransfers(st);
  $('epoch').textContent = coll ? `epoch ${coll.epoch} · ${coll.shard_number} shards × rf ` +
                                  `${coll.replication_factor} · cap ${coll.load_cap} copies/node` : '';
}

/* Every partial copy, with its source's report when there is one. */
function drawTransfers(st) {
  const rows = [];
  for (const [name, c] of Object.entries(st.collections || {})) {
    const reports = new Map((c.transfers || []).map((x) => [`${x.shard}/${x.to}`, x]));
    for (const sh of c.shards || []) {
      for (const r of sh.replicas || []) {
        if (r.state !== 'partial') continue;
        const x = reports.get(`${sh.id}/${r.node}`);
        const fresh = x && x.xfer === r.xfer;
        const total = fresh ? Math.max(x.total, x.copied) : 0;
        const frac = fresh && total ? x.copied / total : fresh && x.phase === 'done' ? 1 : 0;
        const secs = fresh ? Math.max(0.001, (x.updated_ms - x.started_ms) / 1000) : 0;
        const rate = fresh && x.copied ? `${Math.round(x.copied / secs)} pts/s` : '–';
        rows.push(`<tr data-shard="${esc(sh.id)}" data-to="${esc(r.node)}">` +
                  `<td>${esc(name)}/S${esc(sh.id)}</td>` +
                  `<td>${esc(nm(sh.primary))} → ${esc(nm(r.node))}</td>` +
                  `<td>${esc(fresh ? x.phase : 'starting')}</td>` +
                  `<td>${bar(frac, '')}${fresh ? `${esc(x.copied)} / ${esc(total)}` : '–'}</td>` +
                  `<td>${rate}</td><td>${fresh ? esc(Math.max(0, total - x.copied)) : '?'}</td></tr>`);
      }
    }
  }
  $('transfers').tBodies[0].innerHTML = rows.join('') || '<tr><td colspan="6">none</td></tr>';
}

function syncSelect(st) {
  const names = Object.keys(st.collections || {}).sort();
  if (!names.includes(selected)) selected = names[0] || '';
  const sel = $('coll');
  const have = [...sel.options].map((o) => o.value).join('\n');
  if (have !== names.join('\n')) {
    sel.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join('');
  }
  sel.value = selected;
}

/* ---- replication lag ------------------------------------------------------------ */

/* Applied sequence numbers per copy, from whichever shape /cluster/state
 * carries them in (see the header); Map `${coll}/${shard}/${node}` ->
 * {seq: BigInt, term}. Explicit per-copy numbers win over this node's own. */
function copySeqs(st) {
  const out = new Map();
  const big = (v) => {
    if (v === null || v === undefined || v === '' || typeof v === 'object') return null;
    try { return BigInt(v); } catch { return null; }
  };
  const put = (c, k, node, v, term) => {
    const key = `${c}/${k}/${node}`;
    const seq = big(v);
    if (c === undefined || k === undefined || !node || out.has(key) || seq === null) return;
    out.set(key, {seq, term: term === undefined ? null : String(term)});
  };
  const seqOf = (x) => (x && typeof x === 'object' ? x.seq ?? x.applied_seq ?? x.applied : x);
  const take = (c, x) => {
    if (x && typeof x === 'object')
      put(c, x.shard ?? x.shard_id, x.node ?? x.node_id ?? x.peer, seqOf(x), x.term);
  };
  for (const [name, c] of Object.entries(st.collections || {})) {
    for (const sh of c.shards || [])
      for (const r of sh.replicas || []) put(name, sh.id, r.node, seqOf(r), r.term);
    const s = c.seqs;
    if (Array.isArray(s)) s.forEach((x) => take(name, x));
    else if (s && typeof s === 'object')
      for (const [k, per] of Object.entries(s))
        if (per && typeof per === 'object')
          for (const [node, v] of Object.entries(per)) put(name, k, node, seqOf(v), (v || {}).term);
  }
  if (Array.isArray(st.seqs)) st.seqs.forEach((x) => take(x.collection, x));
  for (const x of (st.local || {}).seqs || []) put(x.collection, x.shard, st.node_id, x.seq, x.term);
  return out;
}

/* {seq, lag} of the copy of shard `sh` on `node`: lag = the primary's
 * applied seq minus the copy's, null when either is unknown or they are
 * from different terms. */
function copyLag(seqs, coll, sh, node) {
  const mine = seqs.get(`${coll}/${sh.id}/${node}`);
  const lead = seqs.get(`${coll}/${sh.id}/${sh.primary}`);
  const seq = mine ? mine.seq : null;
  if (!mine || !lead) return {seq, lag: null};
  if (mine.term !== null && lead.term !== null && mine.term !== lead.term) return {seq, lag: null};
  return {seq, lag: lead.seq > mine.seq ? lead.seq - mine.seq : 0n};
}

function drawReplication(st, seqs) {
  const coll = (st.collections || {})[selected];
  const rows = [];
  let any = false;
  for (const sh of coll && coll.placed ? coll.shards : []) {
    for (const r of sh.replicas || []) {
      const {seq, lag} = copyLag(seqs, selected, sh, r.node);
      any = any || seq !== null;
      const role = r.node === sh.primary ? 'primary' : r.state;
      const cls = lag !== null && lag > 0n ? 'lagging' : '';
      rows.push(`<tr data-shard="${esc(sh.id)}" data-node-id="${esc(r.node)}" ` +
                `data-lag="${lag === null ? '' : esc(lag)}" class="${cls}">` +
                `<td>S${esc(sh.id)}</td><td>${esc(nm(r.node))}</td><td>${esc(role)}</td>` +
                `<td>${seq === null ? '–' : esc(seq)}</td>` +
                `<td>${r.node === sh.primary ? '–' : lag === null ? '?' : esc(lag)}</td></tr>`);
    }
  }
  $('replication').tBodies[0].innerHTML = any ? rows.join('')
    : `<tr><td colspan="5">${coll ? 'no per-copy sequence numbers in /cluster/state' : 'none'}</td></tr>`;
}

/* ---- health and rendering ------------------------------------------------------ */

function setHealth(level, text) {
  const h = $('health');
  h.className = `badge ${level}`;
  h.textContent = text;
  h.dataset.level = level;
}

function health(st) {
  if (!st.enabled) return setHealth('warn', 'cluster mode off: this is a single node');
  const live = (st.members || []).length;
  if (st.fenced) return setHealth('bad', 'etcd: this node is fenced (lease lost)');
  if (!st.controller) return setHealth('warn', `etcd: no controller elected · ${live} live`);
  if ((st.members || []).some((m) => m.lease_ttl_left_s < 0))
    return setHealth('warn', `etcd: lease queries failing · ${live} live`);
  setHealth('ok', `etcd healthy · controller ${nm(st.controller)} · ${live} live node(s)`);
}

const CLUSTER_COLS = '<tr><th>name</th><th>epoch</th><th>shards</th><th>rf</th><th>cap</th>' +
                     '<th>dead copies</th></tr>';

function render(st) {
  learnNodes(st);
  const states = nodeStates(st);
  const seqs = copySeqs(st);
  syncSelect(st);
  if ($('colls').tHead.innerHTML !== CLUSTER_COLS) $('colls').tHead.innerHTML = CLUSTER_COLS;
  drawRing(st, states, seqs);
  drawTables(st, states);
  drawReplication(st, seqs);
  health(st);
}

/* A node without --cluster (or one still joining): its local collections. */
function renderSingle(st) {
  if (st.joining) setHealth('warn', 'joining the cluster…');
  else setHealth('warn', 'cluster mode off: this is a single node');
  const colls = (st.single_node || {}).collections || {};
  const svg = $('ring');
  while (svg.lastChild && svg.lastChild.tagName !== 'desc') svg.removeChild(svg.lastChild);
  el('circle', {cx: 280, cy: 280, r: 200, class: 'ring-base'}, svg);
  el('text', {x: 280, y: 280, class: 'center-label'}, svg,
     st.joining ? 'joining the cluster…' : 'single node: no shard ring');
  $('colls').tHead.innerHTML = '<tr><th>name</th><th>points</th></tr>';
  $('colls').tBodies[0].innerHTML = Object.entries(colls).sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([n, c]) => `<tr><td>${esc(n)}</td><td>${esc(c.points_count)}</td></tr>`).join('') ||
    '<tr><td colspan="2">none</td></tr>';
  for (const id of ['nodes', 'transfers', 'replication'])
    $(id).tBodies[0].innerHTML = '<tr><td colspan="6">–</td></tr>';
  $('epoch').textContent = '';
}

/* A state document from either feed. */
function onState(st, via) {
  if (via === 'stream') document.body.dataset.states = String(++statesSeen);
  if (st.node_id) servingNode = st.node_id;
  if (!st.enabled) {
    renderSingle(st);
  } else {
    learnNodes(st);
    diff(prev, st);
    render(st);
    prev = st;
  }
  if (failing) logEvent('state answers again');
  failing = false;
  $('updated').textContent = `updated ${clock()} from ${location.host}`;
}

/* One line of the serving node's event ring ({seq, ms, text}). */
function onNodeEvent(e) {
  eventsAfter = Math.max(eventsAfter, e.seq);
  const text = String(e.text).replace(/\d{6,}/g, (id) => (known.has(id) ? nm(id) : id));
  const who = servingNode ? nm(servingNode) : 'this node';
  logEvent(`[${who}] ${text}`, /failed|dead|gone/.test(text) ? 'bad' : '');
}

function onFailure(message) {
  if (!failing) logEvent(`/cluster/state failed: ${message}`, 'bad');
  failing = true;
  setHealth('bad', `no state: ${message}`);
}

/* ---- feeds: the event stream, polling as the fallback --------------------------- */

function setFeed(mode, text) {
  const f = $('feed');
  f.className = `feed ${mode}`;
  f.dataset.mode = mode;
  f.textContent = text;
}

function startStream() {
  streamRetry = null;
  if (typeof EventSource === 'undefined') return startPolling('this browser has no EventSource');
  const q = new URLSearchParams();
  if (apiKey) q.set('api-key', apiKey);
  if (eventsAfter) q.set('last_event_id', String(eventsAfter));
  const qs = q.toString();
  const src = new EventSource(`/cluster/events${qs ? `?${qs}` : ''}`);
  es = src;
  streamErrors = 0;
  setFeed('reconnecting', 'connecting to the stream…');
  src.onopen = () => {
    if (es !== src) return;
    streamErrors = 0;
    stopPolling();
    setFeed('stream', 'live (stream)');
  };
  src.addEventListener('state', (m) => {
    if (es === src) onState(parseJSON(m.data), 'stream');
  });
  src.addEventListener('event', (m) => {
    if (es === src) onNodeEvent(JSON.parse(m.data));
  });
  src.addEventListener('unavailable', (m) => {
    if (es !== src) return;
    const u = JSON.parse(m.data);
    onFailure(`HTTP ${u.status}: ${u.error}`);
  });
  src.onerror = () => {
    if (es !== src) return;
    /* CLOSED: refused (401, 503 at the stream limit, 404 on an old server);
     * CONNECTING: the browser retries on its own; a second failure in a
     * row (the node is down) hands over to polling. */
    if (src.readyState === EventSource.CLOSED || ++streamErrors >= 2) {
      src.close();
      es = null;
      if ($('feed').dataset.mode !== 'polling')
        logEvent('event stream unavailable: polling /cluster/state instead', 'warn');
      startPolling();
      streamRetry = setTimeout(startStream, STREAM_RETRY_MS);
    } else {
      setFeed('reconnecting', 'stream reconnecting…');
    }
  };
}

function startPolling() {
  if (es) es.close();
  es = null;
  setFeed('polling', `polling (every ${POLL_MS / 1000} s)`);
  if (pollTimer === null) pollTimer = setTimeout(poll, 0);
}

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

async function poll() {
  try {
    const headers = apiKey ? {'api-key': apiKey} : {};
    const res = await fetch(`/cluster/state?events_after=${eventsAfter}`, {headers, cache: 'no-store',
                                                signal: AbortSignal.timeout(TIMEOUT_MS)});
    if (res.status === 401 || res.status === 403) {
      throw new Error(`HTTP ${res.status}: enter the API key (field above, or ?key= in the URL)`);
    }
    const body = parseJSON(await res.text());
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${(body.status || {}).error || ''}`);
    const st = body.result;
    if (pollTimer === null) return; /* the stream took over meanwhile */
    if (st.enabled) {
      learnNodes(st);
      servingNode = st.node_id;
      for (const e of st.events || []) if (e.seq > eventsAfter) onNodeEvent(e);
    }
    onState(st, 'poll');
    document.body.dataset.polls = String(++pollOk);
  } catch (e) {
    if (pollTimer !== null) onFailure(e.message);
  } finally {
    if (pollTimer !== null) pollTimer = setTimeout(poll, POLL_MS);
  }
}

$('apikey').value = apiKey;
$('keyform').addEventListener('submit', (ev) => {
  ev.preventDefault();
  apiKey = $('apikey').value;
  /* A stream carries its key in the URL: open a new one with it. */
  if (es) es.close();
  es = null;
  if (streamRetry) clearTimeout(streamRetry);
  startStream();
});
$('coll').addEventListener('change', () => {
  selected = $('coll').value;
  if (prev) render(prev);
});
startStream();
