// Error queue page: counts, filters, the retry-item table with actions and
// attempt history, paging and a 5-second auto-refresh.

import {
  alertBox, api, formatDuration, formatNumber, formatTime, h, humanize, pageHeading, plural,
  setAlert, statusBox, tableWrap, uid,
} from '/console/api.js';

const STATUSES = ['pending', 'processing', 'resolved', 'failed', 'cancelled'];
const REFRESH_MS = 5000;
const COLUMNS = ['Operation', 'Status', 'Attempts', 'Last error', 'Next retry', 'Created', 'Actions'];

// The last 8 characters: ids are UUIDv7, whose first ones are the creation time and repeat.
const shortId = (id) => String(id ?? '').slice(-8);
const canRetry = (s) => s === 'pending' || s === 'failed';
const canCancel = (s) => s === 'pending' || s === 'failed' || s === 'processing';

export function mount(root) {
  let alive = true;
  let filters = { status: 'all', operation: '' };
  let pageToken = null;
  let items = [];
  let loadSeq = 0;
  let loading = false;
  let busy = false;
  const openIds = new Set();
  const details = new Map(); // id → detail object or Error

  const status = statusBox();
  const actionAlert = alertBox();
  const listAlert = alertBox();
  const counts = h('ul', { class: 'counts', 'aria-label': 'Items by status' });
  const updated = h('p', { class: 'muted small' });
  const totalText = h('p', { class: 'total' });

  const statusId = uid('status-filter');
  const opId = uid('op-filter');
  const statusSelect = h('select', { id: statusId, name: 'status' },
    h('option', { value: 'all', text: 'All' }),
    STATUSES.map((s) => h('option', { value: s, text: humanize(s) })));
  const opInput = h('input', { type: 'text', id: opId, name: 'operation_type', autocomplete: 'off' });
  const filterForm = h('form', { class: 'form-row filters', 'aria-label': 'Filters' },
    h('div', { class: 'field' }, h('label', { for: statusId, text: 'Status' }), statusSelect),
    h('div', { class: 'field' }, h('label', { for: opId, text: 'Operation type' }), opInput),
    h('div', { class: 'field field-button' },
      h('button', { type: 'submit', class: 'button secondary', text: 'Apply filters' })));

  const tbody = h('tbody');
  const table = h('table', { class: 'items' },
    h('caption', { text: 'Retry items' }),
    h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col', text: c })))),
    tbody);
  const tableBox = tableWrap(table, 'Retry items table');
  const empty = h('p', { class: 'muted', hidden: true, text: 'No items match these filters.' });
  const firstButton = h('button', { type: 'button', class: 'button secondary', hidden: true, text: 'First page' });
  const nextButton = h('button', { type: 'button', class: 'button secondary', hidden: true, text: 'Next page' });

  root.append(h('section', { class: 'page' },
    h('div', { class: 'page-title' }, pageHeading('Error queue'), updated),
    status,
    actionAlert,
    counts,
    filterForm,
    listAlert,
    totalText,
    tableBox,
    empty,
    h('div', { class: 'actions' }, firstButton, nextButton)));

  // ------------------------------------------------------------- rendering

  function renderCounts(data) {
    counts.replaceChildren(...STATUSES.map((s) => h('li', { class: `count-card count-${s}` },
      h('span', { class: 'count-label', text: humanize(s) }),
      h('span', { class: 'count-value', text: data ? formatNumber(data[s] ?? 0) : '—' }))));
  }

  function renderDetails(item) {
    const detail = details.get(item.id);
    const cell = h('td', { class: 'details', colspan: String(COLUMNS.length) });
    if (!detail) {
      cell.append(h('p', { class: 'muted', text: 'Loading details…' }));
    } else if (detail instanceof Error) {
      // No role="alert": the panel is rebuilt on every refresh and would re-announce.
      cell.append(h('p', { class: 'alert', text: `Could not load details: ${detail.message}` }));
    } else {
      const op = detail.operation_type ?? item.operation_type;
      const facts = [
        ['ID', detail.id],
        ['Reference', detail.reference_table || detail.reference_id
          ? `${detail.reference_table ?? '—'} ${detail.reference_id ?? ''}`.trim() : null],
        ['Idempotency key', detail.idempotency_key],
        ['Worker', detail.worker_id],
        ['Lease expires', detail.lease_expires_at && formatTime(detail.lease_expires_at)],
        ['Resolved', detail.resolved_at && formatTime(detail.resolved_at)],
        ['Updated', formatTime(detail.updated_at)],
      ].filter(([, v]) => v);
      const history = Array.isArray(detail.attempt_history) ? detail.attempt_history : [];
      const attempts = h('table', { class: 'nested' },
        h('caption', { text: `Attempts of ${op}` }),
        h('thead', {}, h('tr', {}, ['Attempt', 'Started', 'Finished', 'Duration', 'Outcome', 'Error', 'Worker']
          .map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, history.length
          ? history.map((a) => h('tr', {},
            h('td', { class: 'num', text: formatNumber(a.attempt) }),
            h('td', { text: formatTime(a.started_at) }),
            h('td', { text: formatTime(a.finished_at) }),
            h('td', { class: 'num', text: formatDuration(a.duration_ms) }),
            h('td', {}, h('span', { class: `badge badge-${a.outcome}`, text: a.outcome ?? '—' })),
            h('td', { class: 'wrap', text: a.error ?? '—' }),
            h('td', { text: a.worker_id ?? '—' })))
          : h('tr', {}, h('td', { colspan: '7', class: 'muted', text: 'No attempts yet.' }))));
      const payloadId = uid('payload');
      cell.append(
        h('dl', { class: 'meta' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
        tableWrap(attempts, `Attempts of ${op} table`),
        h('p', { class: 'label', id: payloadId, text: 'Payload' }),
        h('pre', { 'aria-labelledby': payloadId, tabindex: '0', 'data-focus': `pre:${item.id}`, text: JSON.stringify(detail.payload ?? null, null, 2) }));
    }
    return h('tr', { class: 'details-row', id: `details-${item.id}` }, cell);
  }

  function itemRows(item) {
    const op = item.operation_type ?? '—';
    const tag = `${op} ${shortId(item.id)}`;
    const open = openIds.has(item.id);
    const actionButton = (kind, text, enabled, onclick) => h('button', {
      type: 'button',
      class: `button small${kind === 'cancel' ? ' danger' : ''}`,
      'aria-label': `${text === 'Retry now' ? 'Retry' : text} ${tag}`,
      'data-focus': `${kind}:${item.id}`,
      disabled: !enabled || busy,
      text,
      onclick,
    });
    const row = h('tr', {},
      h('td', {}, h('span', { class: 'op', text: op }), h('span', { class: 'cell-note mono', text: shortId(item.id) })),
      h('td', {}, h('span', { class: `badge badge-${item.status}`, text: item.status ?? '—' })),
      h('td', { class: 'num', text: `${item.attempts ?? 0} / ${item.max_attempts ?? '—'}` }),
      h('td', { class: 'wrap last-error', title: item.last_error ?? null, text: item.last_error ?? '—' }),
      h('td', { text: formatTime(item.next_retry_at) }),
      h('td', { text: formatTime(item.created_at) }),
      h('td', { class: 'row-actions' },
        actionButton('retry', 'Retry now', canRetry(item.status), () => act(item, 'retry')),
        actionButton('cancel', 'Cancel', canCancel(item.status), () => act(item, 'cancel')),
        h('button', {
          type: 'button',
          class: 'button small secondary',
          'aria-label': `Details ${tag}`,
          'aria-expanded': String(open),
          'aria-controls': open ? `details-${item.id}` : null,
          'data-focus': `details:${item.id}`,
          text: 'Details',
          onclick: () => toggleDetails(item),
        })));
    if (!open) return [row];
    return [row, renderDetails(item)];
  }

  /** Re-renders the table, keeping keyboard focus on the same control. */
  function renderTable(focusKey = null) {
    const active = document.activeElement;
    const key = focusKey ?? (table.contains(active) ? active.closest('[data-focus]')?.dataset.focus : null);
    tbody.replaceChildren(...items.flatMap(itemRows));
    empty.hidden = items.length > 0;
    if (!key) return;
    const find = (k) => [...tbody.querySelectorAll('[data-focus]')].find((el) => el.dataset.focus === k);
    let target = find(key);
    if (!target || target.disabled) target = find(`details:${key.split(':').slice(1).join(':')}`);
    target?.focus();
  }

  // ------------------------------------------------------------- data

  async function load({ focusKey = null } = {}) {
    const seq = ++loadSeq;
    loading = true;
    const query = new URLSearchParams({ status: filters.status, limit: '20' });
    if (filters.operation) query.set('operation_type', filters.operation);
    if (pageToken) query.set('page_token', pageToken);
    try {
      const data = await api(`/api/errors?${query}`);
      if (!alive || seq !== loadSeq) return;
      setAlert(listAlert, '');
      items = Array.isArray(data?.items) ? data.items : [];
      renderCounts(data?.counts);
      totalText.textContent = plural(data?.total ?? items.length, 'item');
      nextButton.hidden = !data?.next_page_token;
      nextButton.dataset.token = data?.next_page_token ?? '';
      firstButton.hidden = !pageToken;
      updated.textContent = `Updated ${new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })}`;
      const visible = new Set(items.map((i) => i.id));
      for (const id of openIds) if (!visible.has(id)) openIds.delete(id);
      renderTable(focusKey);
      for (const id of openIds) loadDetails(id);
    } catch (err) {
      if (alive && seq === loadSeq) setAlert(listAlert, err.message);
    } finally {
      if (seq === loadSeq) loading = false;
    }
  }

  async function loadDetails(id) {
    try {
      const detail = await api(`/api/errors/${encodeURIComponent(id)}`);
      details.set(id, detail);
    } catch (err) {
      details.set(id, err);
    }
    if (!alive || !openIds.has(id)) return;
    const item = items.find((i) => i.id === id);
    const old = [...tbody.rows].find((tr) => tr.id === `details-${id}`);
    if (!item || !old) return;
    const hadFocus = old.contains(document.activeElement);
    const fresh = renderDetails(item);
    old.replaceWith(fresh);
    if (hadFocus) fresh.querySelector('pre')?.focus();
  }

  function toggleDetails(item) {
    if (openIds.has(item.id)) {
      openIds.delete(item.id);
      renderTable(`details:${item.id}`);
      return;
    }
    openIds.add(item.id);
    renderTable(`details:${item.id}`);
    loadDetails(item.id);
  }

  async function act(item, action) {
    if (busy) return;
    busy = true;
    setAlert(actionAlert, '');
    renderTable(`${action}:${item.id}`);
    const op = item.operation_type ?? shortId(item.id);
    try {
      await api(`/api/errors/${encodeURIComponent(item.id)}/${action}`, { method: 'POST' });
      if (!alive) return;
      status.textContent = `${action === 'retry' ? 'Retried' : 'Cancelled'} ${op}`;
    } catch (err) {
      if (alive) setAlert(actionAlert, err.message);
    } finally {
      busy = false;
    }
    if (!alive) return;
    renderTable(`${action}:${item.id}`);
    await load({ focusKey: `${action}:${item.id}` });
  }

  function applyFilters() {
    filters = { status: statusSelect.value, operation: opInput.value.trim() };
    pageToken = null;
    load();
  }

  statusSelect.addEventListener('change', applyFilters);
  opInput.addEventListener('change', applyFilters);
  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    applyFilters();
  });
  nextButton.addEventListener('click', () => {
    pageToken = nextButton.dataset.token || null;
    load().then(() => (nextButton.hidden ? firstButton : nextButton).focus());
  });
  firstButton.addEventListener('click', () => {
    pageToken = null;
    load().then(() => (nextButton.hidden ? tableBox : nextButton).focus());
  });

  const tick = () => {
    if (!document.hidden && !loading && !busy) load();
  };
  const timer = setInterval(tick, REFRESH_MS);
  const onVisibility = () => {
    if (!document.hidden) tick();
  };
  document.addEventListener('visibilitychange', onVisibility);

  renderCounts(null);
  load();

  return () => {
    alive = false;
    clearInterval(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
