// The grapevine dashboard: a plain ES module, no framework and no build step.
// Every value from the server goes into the page as text (textContent, or an
// attribute set with setAttribute); nothing is ever parsed as HTML, so job
// payloads, errors and task names cannot inject markup.

const meta = (name) => document.querySelector(`meta[name="${name}"]`).getAttribute('content');
const BASE = meta('grapevine-base');
const CSRF = meta('grapevine-csrf');
const READ_ONLY = meta('grapevine-readonly') === 'true';
const STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];
const view = document.getElementById('view');

/** An element: h('a', { href: '#/' }, 'text', child). Strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(path, options = {}) {
  const res = await fetch(`${BASE}/api/${path}`, {
    ...options,
    headers: { accept: 'application/json', ...(options.method === 'POST' ? { 'x-grapevine-csrf': CSRF } : {}) },
    credentials: 'same-origin',
  });
  const body = await res.json().catch(() => ({ error: { message: `HTTP ${res.status}` } }));
  if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body;
}

function ago(value) {
  if (!value) return '';
  const s = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  const abs = Math.abs(s);
  const text =
    abs < 90
      ? `${abs} s`
      : abs < 5400
        ? `${Math.round(abs / 60)} min`
        : abs < 172800
          ? `${Math.round(abs / 3600)} h`
          : `${Math.round(abs / 86400)} d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}
const time = (value) => (value ? h('span', { title: new Date(value).toISOString() }, ago(value)) : h('span', { class: 'muted' }, '—'));
const state = (s) => h('span', { class: `state ${s}`, 'data-state': s }, s);
const num = (n) => h('td', { class: 'num' }, typeof n === 'number' ? n.toLocaleString('en') : n);
const jobLink = (id) => h('a', { href: `#/job/${encodeURIComponent(id)}` }, `#${id}`);
const pretty = (value) => (value === undefined ? '' : JSON.stringify(value, null, 2));

/** The confirmation every action goes through; resolves true only on Confirm. */
function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.close();
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      resolve(answer);
    };
    const yes = document.getElementById('confirm-yes');
    const no = document.getElementById('confirm-no');
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
    dialog.addEventListener('cancel', onNo, { once: true });
    dialog.showModal();
  });
}

function actionButton(label, question, run, className = 'danger') {
  if (READ_ONLY) return null;
  return h(
    'button',
    {
      type: 'button',
      class: className,
      'data-action': label.toLowerCase().replaceAll(' ', '-'),
      // `run` may answer with a line to show once the view is re-read.
      onclick: async (event) => {
        if (!(await confirmAction(question))) return;
        event.target.disabled = true;
        let notice = null;
        let failed = false;
        try {
          notice = await run();
        } catch (err) {
          notice = err.message;
          failed = true;
        }
        await render();
        if (typeof notice === 'string') alertBox(notice, failed);
      },
    },
    label,
  );
}

function alertBox(message, error = true) {
  view.prepend(h('p', { class: `notice${error ? ' error-text' : ''}`, role: 'alert' }, message));
}

// ---------------------------------------------------------------- live updates

/** The latest overview pushed by the server, and who wants to hear about changes. */
const live = { overview: null, listeners: new Set() };
function connect() {
  const indicator = document.getElementById('live');
  const source = new EventSource(`${BASE}/api/events`);
  source.addEventListener('open', () => {
    indicator.className = 'live on';
    indicator.textContent = 'live';
  });
  source.addEventListener('error', () => {
    indicator.className = 'live off';
    indicator.textContent = 'reconnecting';
  });
  source.addEventListener('overview', (e) => {
    live.overview = JSON.parse(e.data);
    for (const fn of live.listeners) fn('overview');
  });
  source.addEventListener('jobs', () => {
    for (const fn of live.listeners) fn('jobs');
  });
  source.addEventListener('progress', (e) => {
    const { ids } = JSON.parse(e.data);
    for (const fn of live.listeners) fn('progress', ids);
  });
}

// ---------------------------------------------------------------- views

function overviewView(o) {
  const tiles = h(
    'div',
    { class: 'tiles' },
    STATES.map((s) =>
      h(
        'a',
        { class: 'tile', href: `#/jobs?state=${s}`, 'data-tile': s },
        state(s),
        h('div', { class: 'n' }, `${o.estimated && !['pending', 'running'].includes(s) ? '≈ ' : ''}${o.states[s].toLocaleString('en')}`),
      ),
    ),
  );
  const queues = o.queues.length
    ? h(
        'table',
        { id: 'queues' },
        h(
          'tr',
          {},
          h('th', {}, 'queue'),
          ['due', 'scheduled', 'running', 'succeeded / min', 'failed / min', 'failed (5 min)', 'oldest due waits'].map((t) =>
            h('th', { class: 'num' }, t),
          ),
          h('th', {}, 'limits'),
        ),
        o.queues.map((q) =>
          h(
            'tr',
            { 'data-queue': q.queue },
            h('td', {}, h('a', { href: `#/jobs?queue=${encodeURIComponent(q.queue)}` }, q.queue)),
            num(q.due),
            num(q.scheduled),
            num(q.running),
            num(q.succeeded_1m),
            num(q.failed_1m),
            num(q.failed_5m),
            num(q.due ? `${q.oldest_due_seconds.toFixed(1)} s` : '—'),
            h(
              'td',
              { 'data-limits': '' },
              q.paused ? h('strong', {}, 'paused') : null,
              q.paused && q.limits ? ' · ' : null,
              q.limits ?? (q.paused ? null : '—'),
            ),
          ),
        ),
      )
    : h('p', { class: 'muted' }, 'No queue has pending or running jobs, jobs that finished in the last five minutes, or limits.');
  const sups = o.supervisors.filter((s) => s.status !== 'EXITED' && s.status !== 'LOST');
  return [
    h('h1', {}, 'Overview'),
    tiles,
    o.estimated
      ? h('p', { class: 'muted' }, '≈ finished counts are PostgreSQL’s estimate (as of its last ANALYZE); pending and running are exact.')
      : null,
    h('h2', {}, 'Queues'),
    queues,
    h('h2', {}, 'Supervisors'),
    h('p', {}, `${sups.length} live, ${sups.reduce((n, s) => n + s.threads, 0)} threads. `, h('a', { href: '#/supervisors' }, 'Details')),
  ];
}

async function renderOverview() {
  const o = live.overview ?? (await api('overview'));
  return overviewView(o);
}

const FILTERS = [
  ['task', 'task'],
  ['queue', 'queue'],
  ['key', 'key'],
  ['group', 'group'],
  ['since', 'created since', 'datetime-local'],
  ['until', 'created before', 'datetime-local'],
  ['error', 'error contains'],
];

/** Local datetime-local text to ISO and back: the API takes ISO 8601. */
const toIso = (local) => (local ? new Date(local).toISOString() : '');
const toLocal = (iso) => {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};

async function renderJobs(params) {
  const after = params.get('after');
  const page = await api(`jobs?${params}`);
  const form = h(
    'form',
    {
      class: 'filters',
      id: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(e.target);
        const q = new URLSearchParams();
        for (const [k, v] of data) if (v) q.set(k, k === 'since' || k === 'until' ? toIso(v) : v);
        location.hash = `#/jobs?${q}`;
      },
    },
    h(
      'label',
      {},
      'state',
      h(
        'select',
        { name: 'state' },
        h('option', { value: '' }, 'any'),
        STATES.map((s) => h('option', { value: s, selected: params.get('state') === s }, s)),
      ),
    ),
    FILTERS.map(([name, label, type = 'text']) => {
      const value = type === 'datetime-local' ? toLocal(params.get(name)) : (params.get(name) ?? '');
      return h('label', {}, label, h('input', { name, type, value }));
    }),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'),
    h('a', { href: '#/jobs' }, 'clear'),
  );
  const rows = page.jobs.map((j) =>
    h(
      'tr',
      { 'data-job': j.id },
      h('td', {}, jobLink(j.id)),
      h('td', {}, j.task),
      h('td', {}, j.queue),
      h('td', {}, state(j.state)),
      num(`${j.attempts}/${j.maxAttempts}`),
      h('td', {}, time(j.createdAt)),
      h('td', {}, j.state === 'pending' ? time(j.runAt) : time(j.finishedAt ?? j.startedAt)),
      h('td', { class: 'error-text' }, j.lastError ?? ''),
      h('td', {}, h('code', {}, j.payloadPreview)),
    ),
  );
  const first = new URLSearchParams(params);
  first.delete('after');
  // Bulk actions on every job the filter matches (not just this page), when there is a filter.
  const filter = new URLSearchParams(first);
  filter.delete('limit');
  const described = [...filter].map(([k, v]) => `${k}=${v}`).join(', ');
  const stateFilter = filter.get('state');
  const bulk = described
    ? h(
        'div',
        { class: 'actions' },
        !stateFilter || ['failed', 'cancelled'].includes(stateFilter)
          ? actionButton(
              'Retry all matching',
              `Retry every failed or cancelled job matching ${described}? They go back to pending, due now.`,
              async () => `retried ${(await api(`matching/retry?${filter}`, { method: 'POST' })).retried} jobs`,
              'primary',
            )
          : null,
        !stateFilter || ['pending', 'running'].includes(stateFilter)
          ? actionButton('Cancel all matching', `Cancel every pending or running job matching ${described}?`, async () => {
              const done = await api(`matching/cancel?${filter}`, { method: 'POST' });
              return `cancelled ${done.cancelled} pending jobs; asked the owners of ${done.cancelling} running jobs to abort them`;
            })
          : null,
      )
    : null;
  const next = new URLSearchParams(params);
  if (page.next) next.set('after', page.next);
  return [
    h('h1', {}, 'Jobs'),
    form,
    bulk,
    h(
      'table',
      { id: 'jobs' },
      h(
        'tr',
        {},
        ['id', 'task', 'queue', 'state', 'attempts', 'created', 'due / ended', 'last error', 'payload'].map((t) => h('th', {}, t)),
      ),
      rows.length ? rows : h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No jobs match.')),
    ),
    h(
      'div',
      { class: 'pager' },
      after ? h('a', { href: `#/jobs?${first}` }, '« newest') : null,
      page.next ? h('a', { href: `#/jobs?${next}`, id: 'next-page' }, 'older »') : null,
      h('span', { class: 'muted' }, after ? '' : 'newest first; this page follows new jobs live'),
    ),
  ];
}

/** A bar for a number (0-100), { percent } or { done, total }; any other value is shown as JSON only. */
function progressOf(job) {
  const p = job.progress;
  if (p === null || p === undefined) return null;
  const value =
    typeof p === 'number'
      ? p
      : typeof p?.percent === 'number'
        ? p.percent
        : typeof p?.done === 'number' && typeof p?.total === 'number' && p.total > 0
          ? (100 * p.done) / p.total
          : null;
  const bar =
    value === null
      ? null
      : h(
          'div',
          { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': value },
          h('div', { style: null }),
        );
  if (bar) {
    bar.firstChild.style.width = `${Math.max(0, Math.min(100, value))}%`;
    bar.setAttribute('aria-valuenow', String(Math.round(value)));
  }
  return h('span', { id: 'progress' }, bar, ' ', typeof p === 'number' ? `${p}%` : h('code', {}, JSON.stringify(p)));
}

async function renderJob(id) {
  const { job, timeline } = await api(`jobs/${encodeURIComponent(id)}`);
  const field = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? h('span', { class: 'muted' }, '—'))];
  const actions = h(
    'div',
    { class: 'actions' },
    ['failed', 'cancelled'].includes(job.state)
      ? actionButton(
          'Retry',
          `Retry job #${job.id} (${job.task})? It goes back to pending, due now.`,
          () => api(`jobs/${job.id}/retry`, { method: 'POST' }),
          'primary',
        )
      : null,
    ['pending', 'running'].includes(job.state)
      ? actionButton(
          'Cancel',
          `Cancel job #${job.id} (${job.task})?${job.state === 'running' ? ' Its owner is asked to abort the handler.' : ''}`,
          () => api(`jobs/${job.id}/cancel`, { method: 'POST' }),
        )
      : null,
  );
  return [
    h('h1', {}, `Job #${job.id} `, state(job.state)),
    actions,
    h(
      'dl',
      { class: 'fields' },
      field('task', job.task),
      field('queue', job.queue),
      field('priority', String(job.priority)),
      field('attempts', `${job.attempts} of ${job.maxAttempts}`),
      field('progress', progressOf(job)),
      field('created', time(job.createdAt)),
      field('due', time(job.runAt)),
      field('started', time(job.startedAt)),
      field('finished', time(job.finishedAt)),
      field('owner', job.lockedBy ? `${job.lockedBy} thread ${job.lockedThread}` : null),
      field('lease until', job.leaseUntil ? time(job.leaseUntil) : null),
      field('cancel requested', job.cancelRequestedAt ? time(job.cancelRequestedAt) : null),
      field('timeout', job.timeoutMs ? `${job.timeoutMs} ms` : null),
    ),
    h('h2', {}, 'Payload'),
    h('pre', { id: 'payload' }, pretty(job.payload)),
    job.lastError ? [h('h2', {}, 'Last error'), h('pre', { id: 'error', class: 'error-text' }, job.lastError)] : null,
    job.result !== null && job.result !== undefined ? [h('h2', {}, 'Result'), h('pre', { id: 'result' }, pretty(job.result))] : null,
    h('h2', {}, 'Timeline'),
    timeline.length
      ? h(
          'table',
          { id: 'timeline' },
          h(
            'tr',
            {},
            ['at', 'event', 'supervisor', 'thread', 'detail'].map((t) => h('th', {}, t)),
          ),
          timeline.map((e) =>
            h(
              'tr',
              {},
              h('td', {}, new Date(e.at).toISOString()),
              h('td', {}, e.event),
              h('td', {}, e.supervisor),
              h('td', {}, e.thread ?? ''),
              h('td', {}, e.detail ?? ''),
            ),
          ),
        )
      : h(
          'p',
          { class: 'muted' },
          'The supervisor log has nothing about this job (busy supervisors log a sample of jobs, and the log is pruned).',
        ),
  ];
}

function supervisorsView(list) {
  if (!list.length) return [h('h1', {}, 'Supervisors'), h('p', { class: 'muted' }, 'No supervisor has registered in this schema.')];
  return [
    h('h1', {}, 'Supervisors'),
    list.map((s) =>
      h(
        'section',
        { 'data-supervisor': s.id },
        h('h2', {}, s.id, ' ', state(s.status)),
        h(
          'p',
          { class: 'muted' },
          `${s.host} pid ${s.pid} · v${s.version} · ${s.threads} threads × ${s.concurrency} · queues ${s.queues ? s.queues.join(', ') : 'all'} · `,
          'heartbeat ',
          time(s.heartbeatAt),
          ` · ${s.restarts} thread restarts`,
        ),
        s.status === 'EXITED' || s.status === 'LOST'
          ? null
          : h(
              'div',
              { class: 'actions' },
              s.status === 'PAUSED'
                ? actionButton(
                    'Resume',
                    `Resume supervisor ${s.id}? It claims jobs again.`,
                    () => api(`supervisors/${encodeURIComponent(s.id)}/resume`, { method: 'POST' }),
                    'primary',
                  )
                : actionButton('Pause', `Pause supervisor ${s.id}? It stops claiming jobs; running jobs finish.`, () =>
                    api(`supervisors/${encodeURIComponent(s.id)}/pause`, { method: 'POST' }),
                  ),
            ),
        s.threadStates.length
          ? h(
              'table',
              { class: 'threads' },
              h(
                'tr',
                {},
                ['thread', 'generation', 'running now', 'jobs run'].map((t) => h('th', {}, t)),
              ),
              s.threadStates.map((t) =>
                h(
                  'tr',
                  {},
                  h('td', {}, String(t.threadId)),
                  h('td', {}, String(t.generation)),
                  h(
                    'td',
                    {},
                    t.currentJobs.length
                      ? t.currentJobs.flatMap((id, i) => (i ? [' ', jobLink(id)] : [jobLink(id)]))
                      : h('span', { class: 'muted' }, 'idle'),
                  ),
                  num(t.jobsRun),
                ),
              ),
            )
          : null,
      ),
    ),
  ];
}

async function renderSupervisors() {
  return supervisorsView(live.overview?.supervisors ?? (await api('supervisors')));
}

async function renderSchedules() {
  const list = await api('schedules');
  return [
    h('h1', {}, 'Schedules'),
    list.length
      ? h(
          'table',
          { id: 'schedules' },
          h(
            'tr',
            {},
            ['name', 'cron', 'time zone', 'task', 'queue', 'missed ticks', 'state', 'last tick', 'next runs'].map((t) => h('th', {}, t)),
          ),
          list.map((s) =>
            h(
              'tr',
              {},
              h('td', {}, s.name),
              h('td', {}, h('code', {}, s.cron)),
              h('td', {}, s.tz),
              h('td', {}, s.task),
              h('td', {}, s.queue),
              h('td', {}, typeof s.missed === 'object' ? JSON.stringify(s.missed) : s.missed),
              h('td', {}, s.paused ? 'paused' : 'active'),
              h('td', {}, time(s.lastTick)),
              h('td', {}, s.nextRuns.map((t) => new Date(t).toISOString()).join(', ')),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No schedules (grapevine schedule add, or a crontab file).'),
  ];
}

// ---------------------------------------------------------------- routing

let current = 0;
let refetchTimer = null;
async function render(refresh = false) {
  const token = ++current;
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean);
  const name = parts[0] ?? 'overview';
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === (name === 'job' ? 'jobs' : name));
  let content;
  try {
    if (name === 'jobs') content = await renderJobs(params);
    else if (name === 'job') content = await renderJob(decodeURIComponent(parts[1] ?? ''));
    else if (name === 'supervisors') content = await renderSupervisors();
    else if (name === 'schedules') content = await renderSchedules();
    else content = await renderOverview();
  } catch (err) {
    content = h('p', { class: 'notice error-text', role: 'alert' }, err.message);
  }
  if (token !== current) return;
  // A live refresh keeps what the user is typing in the filter form, and a
  // choice made there but not yet submitted.
  if (refresh === true && (document.activeElement?.closest?.('input, select') || filtersEdited())) return;
  view.replaceChildren(...[content].flat(3).filter(Boolean));
  view.dataset.view = name;
}

/** Whether a field of the filter form differs from what it was drawn with (its attributes). */
function filtersEdited() {
  const form = document.getElementById('filters');
  if (!form) return false;
  for (const el of form.elements) {
    if (el instanceof HTMLInputElement && el.value !== el.defaultValue) return true;
    // A select drawn with no option marked shows its first.
    if (el instanceof HTMLSelectElement && el.value !== ([...el.options].find((o) => o.defaultSelected) ?? el.options[0])?.value)
      return true;
  }
  return false;
}

/** What a live event re-renders: the overview and supervisors on every snapshot, the first page of jobs and a live job on changes. */
live.listeners.add((kind, ids) => {
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  const name = parts[0] ?? 'overview';
  const wanted =
    (kind === 'overview' && (name === 'overview' || name === 'supervisors' || name === 'job')) ||
    (kind === 'jobs' && name === 'jobs' && !new URLSearchParams(query).has('after')) ||
    (kind === 'progress' && name === 'job' && ids.includes(decodeURIComponent(parts[1] ?? '')));
  if (!wanted || document.querySelector('dialog[open]')) return;
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(() => render(true), 100);
});

window.addEventListener('hashchange', () => render());
connect();
render();
