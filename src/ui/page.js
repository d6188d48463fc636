
'use strict';
// Everything that comes from the API is put in the DOM as text (append/textContent/setAttribute),
// never parsed as HTML.
(() => {
const $ = id => document.getElementById(id);
const REFRESH_MS = 5000;
const ORDER = ['Error', 'UpdateAvailable', 'Unknown', 'Skipped', 'UpToDate'];
const LABEL = {Error: 'error', UpdateAvailable: 'update available', Unknown: 'not checked', Skipped: 'skipped', UpToDate: 'up to date'};
const st = {
  containers: [], jobs: null, regs: null, loaded: false,
  down: 0, upAt: 0, readErr: '', readAsked: false, readFail: '',
  noAdmin: '', busy: {}, open: new Set(), sig: '', timer: 0, inflight: false, again: false,
};

// --- tokens: this tab only ---
const tok = k => sessionStorage.getItem('wd.' + k) || '';
const setTok = (k, v) => v ? sessionStorage.setItem('wd.' + k, v) : sessionStorage.removeItem('wd.' + k);

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'disabled') e.disabled = true;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(method, path, admin) {
  const t = admin ? tok('admin') : (tok('read') || tok('admin'));
  let r;
  try {
    r = await fetch(path, {method, headers: t ? {Authorization: 'Bearer ' + t} : {}, cache: 'no-store', credentials: 'omit'});
  } catch (e) {
    return {net: true, status: 0, code: -1, msg: 'the daemon did not answer', data: null};
  }
  let b = null;
  try { b = await r.json(); } catch (e) { /* not JSON */ }
  return {
    status: r.status,
    code: b && typeof b.code === 'number' ? b.code : -1,
    msg: (b && b.msg) || ('HTTP ' + r.status),
    data: b ? b.data : null,
  };
}

const sleep = ms => new Promise(res => setTimeout(res, ms));
const shortDigest = d => d ? String(d).replace(/^sha256:/, '').slice(0, 12) : '';
function when(t) {
  if (!t) return '';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}
const time = t => t ? h('time', {datetime: t, title: t}, when(t)) : h('span', {class: 'muted'}, 'never');

// --- refresh loop ---
async function refresh() {
  if (st.inflight) { st.again = true; return; }
  st.inflight = true;
  clearTimeout(st.timer);
  const [c, j, g] = await Promise.all([api('GET', '/api/containers'), api('GET', '/api/jobs'), api('GET', '/api/registries')]);
  if (c.net) {
    if (!st.down) st.down = Date.now();
  } else {
    st.down = 0;
    st.upAt = Date.now();
    st.readErr = '';
    if (c.status === 401) {
      st.readErr = c.msg;
      if (!st.readAsked) {
        st.readAsked = true;
        openTok('This server protects reads: enter the read token (or the admin token) to see the containers.');
      }
    } else if (c.status === 200 && Array.isArray(c.data)) {
      st.containers = c.data;
      st.loaded = true;
      st.readFail = '';
    } else {
      st.readFail = 'GET /api/containers failed: ' + c.msg;
    }
    st.jobs = j.status === 200 && Array.isArray(j.data) ? j.data : null;
    st.regs = g.status === 200 && Array.isArray(g.data) ? g.data : null;
  }
  render();
  st.inflight = false;
  if (st.again) { st.again = false; refresh(); } else st.timer = setTimeout(refresh, REFRESH_MS);
}

function canAct() {
  return !!tok('admin') && !st.noAdmin;
}
function roReason() {
  if (st.noAdmin) return 'Read-only: the server has no admin token configured, so scanning, updating and rolling back are disabled. ' + st.noAdmin;
  if (!tok('admin')) return 'Read-only: no admin token entered. Scan, update and roll back need the admin token (server.token) — use “Enter token”.';
  return '';
}

// --- rendering ---
function render() {
  const conn = $('conn'), down = $('daemon-down');
  if (st.down) {
    conn.textContent = 'daemon unreachable';
    conn.className = 'down';
    down.hidden = false;
    down.textContent = 'The daemon is unreachable since ' + new Date(st.down).toLocaleTimeString() +
      '. Retrying every ' + REFRESH_MS / 1000 + ' s; what is shown below may be out of date.';
  } else {
    conn.textContent = st.upAt ? 'live · updated ' + new Date(st.upAt).toLocaleTimeString() : 'connecting…';
    conn.className = '';
    down.hidden = true;
  }
  $('tbl').classList.toggle('stale', !!st.down);
  $('tokbtn').textContent = tok('admin') || tok('read') ? 'Tokens (set)' : 'Enter token';

  const ro = [roReason(), st.readErr && ('Reads are protected on this server: enter the read token. (' + st.readErr + ')'), st.readFail]
    .filter(Boolean).join(' ');
  $('ro').textContent = ro;
  const why = roReason();
  for (const b of [$('scan'), $('runall')]) {
    b.disabled = !canAct();
    if (why) b.setAttribute('aria-describedby', 'ro'); else b.removeAttribute('aria-describedby');
    b.title = why;
  }
  renderSummary();
  renderRows();
}

function renderSummary() {
  const n = {};
  for (const c of st.containers) n[c.status] = (n[c.status] || 0) + 1;
  $('counts').replaceChildren(
    h('li', {}, h('strong', {}, String(st.containers.length)), ' containers'),
    ...ORDER.map(s => h('li', {'data-count': s}, h('span', {class: 'badge b-' + s}, String(n[s] || 0) + ' ' + LABEL[s]))));

  const job = id => (st.jobs || []).find(j => j.id === id);
  const scan = job('scan'), upd = job('update');
  const items = [];
  const add = (k, ...v) => items.push(h('dt', {}, k), h('dd', {}, ...v));
  if (!st.jobs) add('Scans', h('span', {class: 'muted'}, 'job status not available'));
  else {
    if (scan && scan.running) add('Scan', 'running since ', time(scan.lastStart));
    add('Last scan', scan && scan.lastEnd ? [time(scan.lastEnd), scan.outcome === 'failed' ? h('span', {class: 'err'}, ' failed: ', scan.lastError || '') : ''] : h('span', {class: 'muted'}, 'none yet'));
    add('Next scan', scan && scan.nextRun ? time(scan.nextRun) : h('span', {class: 'muted'}, 'not scheduled'));
    if (upd && upd.nextRun) add('Next update run', time(upd.nextRun));
  }
  $('jobs').replaceChildren(...items);

  let regs;
  if (!st.regs) regs = h('span', {class: 'muted'}, 'not available');
  else if (!st.regs.length) regs = h('span', {class: 'muted'}, 'none contacted yet');
  else regs = h('ul', {}, st.regs.map(r => h('li', {},
    h('code', {}, r.host), ': ',
    r.rateLimitRemaining == null ? 'no rate limit reported' : String(r.rateLimitRemaining) + ' requests left',
    ' · ' + (r.requests || 0) + ' requests, ' + (r.errors || 0) + ' errors',
    r.pausedUntil ? h('span', {class: 'err'}, ' · paused until ', time(r.pausedUntil)) : '',
    r.lastError ? h('span', {class: 'err', title: r.lastError}, ' · last error: ', r.lastError) : '')));
  $('regs').replaceChildren(h('strong', {}, 'Registries'), ' ', regs);
}

function visible() {
  const fs = $('f-status').value, q = $('f-text').value.trim().toLowerCase(), by = $('f-sort').value;
  const list = st.containers.filter(c => (!fs || c.status === fs) && (!q ||
    [c.name, c.image, c.composeProject, c.composeService, c.error, c.skipReason, c.status, LABEL[c.status]]
      .some(v => v && String(v).toLowerCase().includes(q))));
  const byName = (a, b) => String(a.name).localeCompare(String(b.name));
  list.sort(by === 'status' ? (a, b) => (ORDER.indexOf(a.status) - ORDER.indexOf(b.status)) || byName(a, b) : byName);
  return list;
}

function renderRows() {
  const list = visible();
  // Rebuild only on change, so focus and open details survive the periodic refresh.
  const sig = JSON.stringify([list, st.busy, canAct(), st.noAdmin]);
  if (sig === st.sig) return;
  st.sig = sig;
  // Keep the keyboard focus on the same control of the same row across the rebuild.
  const a = document.activeElement, tr = a && a.closest('#rows tr');
  const sel = tr && ['button.upd', 'button.rb', 'summary'].find(q => a.matches(q));
  $('rows').replaceChildren(...list.map(row));
  const back = sel && [...$('rows').children].find(r => r.dataset.id === tr.dataset.id);
  if (back) back.querySelector(sel).focus();
  const e = $('empty');
  e.hidden = list.length > 0;
  e.textContent = !st.loaded ? 'No container data yet.' : st.containers.length ? 'No container matches the filter.' : 'No containers on this host.';
}

function cell(label, cls, ...kids) {
  return h('td', {'data-label': label, class: cls}, h('div', {}, ...kids));
}

function row(c) {
  const busy = st.busy[c.id];
  const why = roReason();
  const labels = Object.entries(c.labels || {});
  const cur = c.currentDigest, rem = c.remoteDigest;
  const digest = !cur && !rem ? h('span', {class: 'muted'}, 'unknown') : [
    h('code', {title: cur || 'unknown'}, shortDigest(cur) || '?'),
    cur && rem && cur === rem ? ' (same)' : [' → ', h('code', {title: rem || 'unknown'}, shortDigest(rem) || '?')]];
  const updWhy = why || (busy ? 'busy' : c.status === 'UpdateAvailable' ? '' : 'no update available (status: ' + c.status + ')');
  const rbWhy = why || (busy ? 'busy' : c.previousImage ? '' : 'no previous image recorded: not updated by watch-docker yet');
  return h('tr', {'data-id': c.id, 'data-status': c.status, class: busy ? 'busy' : ''},
    cell('Name', 'name', h('strong', {}, c.name), c.running ? '' : h('span', {class: 'muted'}, ' (' + (c.state || 'stopped') + ')'),
      labels.length ? h('details', {open: st.open.has(c.id), ontoggle: e => st.open[e.target.open ? 'add' : 'delete'](c.id)}, h('summary', {}, labels.length + (labels.length > 1 ? ' labels' : ' label')),
        h('ul', {}, labels.map(([k, v]) => h('li', {}, h('code', {}, k + '=' + v))))) : ''),
    cell('Image', 'img', h('code', {}, c.image)),
    cell('Status', 'st', h('span', {class: 'badge b-' + c.status, 'data-status': c.status, title: c.status}, LABEL[c.status] || c.status)),
    cell('Digest', 'dig', digest),
    cell('Reason / error', 'why', c.error ? h('span', {class: 'err'}, c.error) : c.skipReason || h('span', {class: 'muted'}, '—')),
    cell('Policy', 'pol', c.updatePolicy || '', c.updatePolicyReason ? h('span', {class: 'muted'}, ' — ' + c.updatePolicyReason) : ''),
    cell('Last checked', 'chk', time(c.lastCheckedAt)),
    cell('Compose', 'cmp', c.composeProject ? [c.composeProject, c.composeService ? ' / ' + c.composeService : ''] : h('span', {class: 'muted'}, '—')),
    cell('Newer versions', 'nv', c.newerVersions && c.newerVersions.length ? c.newerVersions.join(', ') : h('span', {class: 'muted'}, '—')),
    cell('Actions', 'act',
      busy ? h('span', {class: 'muted', role: 'status'}, busy, ' ') : '',
      h('button', {type: 'button', class: 'upd', disabled: !!updWhy, title: updWhy || 'Update ' + c.name, 'aria-label': 'Update ' + c.name,
        onclick: () => updateOne(c)}, 'Update'),
      h('button', {type: 'button', class: 'rb', disabled: !!rbWhy, title: rbWhy || 'Roll back ' + c.name, 'aria-label': 'Roll back ' + c.name,
        onclick: () => rollbackOne(c)}, 'Roll back')));
}

// --- dialogs ---
let settle = null;
function ask(title, lines, okText) {
  return new Promise(res => {
    settle = res;
    $('c-title').textContent = title;
    $('c-body').replaceChildren(...lines.filter(Boolean).map(l => h('p', {}, l)));
    $('c-ok').textContent = okText;
    $('confirm').showModal();
  });
}
function done(v) {
  const d = $('confirm');
  if (d.open) d.close();
  if (settle) { const s = settle; settle = null; s(v); }
}
$('c-form').addEventListener('submit', e => { e.preventDefault(); done(true); });
$('c-cancel').addEventListener('click', () => done(false));
$('confirm').addEventListener('close', () => done(false));

function openTok(why) {
  $('t-why').textContent = why || '';
  $('t-admin').value = tok('admin');
  $('t-read').value = tok('read');
  $('tok').showModal();
}
$('tokbtn').addEventListener('click', () => openTok(roReason()));
$('t-form').addEventListener('submit', e => {
  e.preventDefault();
  setTok('admin', $('t-admin').value.trim());
  setTok('read', $('t-read').value.trim());
  st.noAdmin = '';
  $('tok').close();
  render();
  refresh();
});
$('t-forget').addEventListener('click', () => { setTok('admin', ''); setTok('read', ''); $('tok').close(); render(); refresh(); });
$('t-cancel').addEventListener('click', () => $('tok').close());

// --- activity log ---
function note(kind, ...text) {
  const li = h('li', {class: kind}, h('time', {}, new Date().toLocaleTimeString()), ' ', ...text);
  const log = $('log');
  log.prepend(li);
  while (log.children.length > 8) log.lastChild.remove();
  return {set: (k, ...t) => { li.className = k; li.replaceChildren(h('time', {}, new Date().toLocaleTimeString()), ' ', ...t); }};
}

// A refused or failed request, in words.
function refusal(what, r) {
  if (r.net) return what + ': the daemon did not answer; the request may not have arrived.';
  if (r.status === 401) {
    setTok('admin', '');
    return what + ': the admin token was rejected (401) and has been forgotten; enter it again. ' + r.msg;
  }
  if (r.status === 403) {
    st.noAdmin = r.msg;
    return what + ': refused (403) — the server has no admin token configured, mutations are disabled. ' + r.msg;
  }
  if (r.status === 409) return what + ': already running or being updated (409). ' + r.msg;
  if (r.status === 501) return what + ': not available in this daemon yet (501).';
  if (r.code === 50002 && r.data) {
    return what + (r.data.rolledBack ? ': failed and was rolled back to the old container: ' : ': failed and was NOT rolled back: ') + (r.data.error || r.msg);
  }
  return what + ': failed (' + r.status + '): ' + r.msg;
}

// POST, then follow the job until it ends. Returns {job} or {fail: message}.
async function run(path, what, entry) {
  const r = await api('POST', path, true);
  if (r.status === 200 && r.data && typeof r.data === 'object' && 'running' in r.data) return {job: r.data};
  if (r.status !== 202 || !r.data || r.data.jobId == null) return {fail: refusal(what, r)};
  const id = String(r.data.jobId);
  entry.set('run', what + ': started (job ' + id + '), in progress…');
  for (let misses = 0; misses < 60;) {
    await sleep(1000);
    const j = await api('GET', '/api/jobs/' + encodeURIComponent(id));
    if (j.status === 200 && j.data) {
      misses = 0;
      if (!j.data.running) return {job: j.data};
      entry.set('run', what + ': in progress (job ' + id + ')…');
    } else {
      misses++;
      entry.set('run', what + ': in progress (job ' + id + '); cannot read its status: ' + (j.net ? 'daemon unreachable' : j.msg));
    }
  }
  return {fail: what + ': lost track of job ' + id + '; see the table for the result.'};
}

function resultLine(x) {
  const name = x.container || x.id || '?';
  switch (x.outcome) {
    case 'updated': return name + ' updated' + (x.toImage ? ' to ' + x.toImage : '') + '.';
    case 'rolledBack': return name + ': update failed and was rolled back' + (x.error ? ': ' + x.error : '') + '.';
    case 'failed': return name + ': failed' + (x.error ? ': ' + x.error : '') + '.';
    case 'unchanged': return name + ': unchanged (nothing newer to run).';
    default: return name + ': ' + (x.outcome || 'no result') + '.';
  }
}

async function mutate(c, path, what, label) {
  const entry = note('run', what + ': sending…');
  if (c) st.busy[c.id] = label;
  render();
  const res = await run(path, what, entry);
  if (c) delete st.busy[c.id];
  if (res.fail) entry.set('fail', res.fail);
  else {
    const job = res.job, results = job.results || [];
    const mine = c ? results.filter(x => x.id === c.id || x.container === c.name) : results.filter(x => x.outcome !== 'unchanged');
    const bad = job.outcome === 'failed' || mine.some(x => x.outcome === 'failed' || x.outcome === 'rolledBack');
    const k = job.counts || {};
    const lines = mine.length ? mine.map(resultLine).join(' ')
      : job.kind === 'scan' ? 'checked ' + (k.checked || 0) + ' containers, ' + (k.updatesFound || 0) + ' updates found.'
        : !c ? 'updated ' + (k.updated || 0) + ', failed ' + (k.failed || 0) + ', rolled back ' + (k.rolledBack || 0) + '.' : '';
    entry.set(bad ? 'fail' : 'ok', what + (bad ? ': failed. ' : ': done. ') + lines + (job.lastError ? ' ' + job.lastError : ''));
  }
  refresh();
}

// --- actions ---
$('scan').addEventListener('click', async () => {
  if (!await ask('Scan now?', [
    'Ask each image\'s registry whether its tag now points to a newer image, for every container.',
    'Nothing is pulled, stopped or changed; the table shows what was found.'], 'Scan now')) return;
  mutate(null, '/api/scan', 'Scan');
});

$('runall').addEventListener('click', async () => {
  const avail = st.containers.filter(c => c.status === 'UpdateAvailable');
  const eligible = avail.filter(c => c.updatePolicy === 'auto' && !c.composeProject);
  const compose = avail.filter(c => c.composeProject);
  if (!await ask('Update all eligible containers?', [
    eligible.length ? (eligible.length > 1 ? 'These ' + eligible.length + ' containers have' : 'This container has') + ' an update and policy “auto”: ' + eligible.map(c => c.name).join(', ') + '. Each is pulled, stopped, recreated with the same settings and started, and rolled back if it fails.'
      : 'No container shows an update with policy “auto” right now; the daemon checks again and updates what it finds.',
    'Compose containers are left alone' + (compose.length ? ' (' + compose.map(c => c.name).join(', ') + ')' : '') + ': update them with docker compose.',
    'Containers with policy “notify” or “skip” are left alone.'], 'Update all')) return;
  mutate(null, '/api/updates/run', 'Update all');
});

async function updateOne(c) {
  if (!await ask('Update ' + c.name + '?', [
    'Pull the newest ' + c.image + ' and replace the container ' + c.name + ' with it: stopped, recreated with the same settings, networks and volumes, and started.',
    c.currentDigest || c.remoteDigest ? 'Image digest ' + (shortDigest(c.currentDigest) || '?') + ' → ' + (shortDigest(c.remoteDigest) || '?') + '.' : '',
    'If the new container fails to start, the old one is put back automatically.',
    c.composeProject ? 'It belongs to compose project “' + c.composeProject + '”; the compose file is not changed.' : ''], 'Update')) return;
  mutate(c, '/api/containers/' + encodeURIComponent(c.id) + '/update', 'Update ' + c.name, 'updating…');
}

async function rollbackOne(c) {
  if (!await ask('Roll back ' + c.name + '?', [
    'Replace the container ' + c.name + ' (now ' + c.image + ') with one from its previous image ' + c.previousImage + ', the one it ran before its last update, with the same settings.',
    'If that fails to start, the current container is kept.'], 'Roll back')) return;
  mutate(c, '/api/containers/' + encodeURIComponent(c.id) + '/rollback', 'Roll back ' + c.name, 'rolling back…');
}

for (const id of ['f-status', 'f-sort']) $(id).addEventListener('change', renderRows);
$('f-text').addEventListener('input', renderRows);
$('filters').addEventListener('submit', e => e.preventDefault());
render();
refresh();
})();
