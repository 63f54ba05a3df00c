// Exports page: catalogue cards, the export form with streamed download and
// progress, and the table of recent exports.

import {
  NETWORK_ERROR, alertBox, api, authHeaders, formatBytes, formatNumber, formatTime, h, isAbort,
  pageHeading, plural, responseError, setAlert, statusBox, tableWrap, uid,
} from '/console/api.js';

const FORMATS = [['csv', 'CSV'], ['json', 'JSON'], ['ndjson', 'NDJSON']];
const DAY_MS = 86_400_000;
const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);

/** Parses `filename*=UTF-8''…` or `filename="…"` from a Content-Disposition header. */
function parseFilename(header) {
  if (!header) return null;
  let name = null;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
  if (star) {
    try {
      name = decodeURIComponent(star[1].trim());
    } catch {
      name = null;
    }
  }
  if (!name) {
    const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))/.exec(header);
    if (plain) name = (plain[1] ?? plain[2]).replace(/\\(.)/g, '$1').trim();
  }
  name = name?.split(/[\\/]/).pop();
  return name || null;
}

/** Rows so far, estimated from newline count (see the format notes in the brief). */
function estimateRows(format, lines) {
  if (format === 'csv') return Math.max(0, lines - 1);
  if (format === 'json') return Math.max(0, lines - 2);
  return Math.max(0, lines);
}

function saveFile(chunks, type, filename) {
  const url = URL.createObjectURL(new Blob(chunks, { type }));
  const link = h('a', { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export function mount(root) {
  let alive = true;
  let configs = [];
  let selected = null;
  let running = null; // AbortController of the export in flight
  let historyToken = null;

  const pageAlert = alertBox();
  const status = statusBox();
  const cards = h('div', { class: 'cards', role: 'group', 'aria-label': 'Export types' });
  const formHost = h('div');

  const historyAlert = alertBox();
  const historyBody = h('tbody');
  const historyEmpty = h('p', { class: 'muted', hidden: true, text: 'No exports yet.' });
  const moreButton = h('button', { type: 'button', class: 'button secondary', hidden: true, text: 'More' });
  const historyTable = h('table', {},
    h('caption', { text: 'Recent exports' }),
    h('thead', {}, h('tr', {}, ['When', 'Type', 'Format', 'Records', 'Size', 'Status']
      .map((col) => h('th', { scope: 'col', text: col })))),
    historyBody);

  root.append(h('section', { class: 'page' },
    pageHeading('Exports'),
    pageAlert,
    h('section', { class: 'panel', 'aria-labelledby': 'catalogue-heading' },
      h('h2', { id: 'catalogue-heading', text: 'Choose data' }),
      cards,
      formHost,
      status),
    h('section', { class: 'panel', 'aria-labelledby': 'history-heading' },
      h('h2', { id: 'history-heading', text: 'Recent exports' }),
      historyAlert,
      tableWrap(historyTable, 'Recent exports table'),
      historyEmpty,
      h('div', { class: 'actions' }, moreButton))));

  // ------------------------------------------------------------- catalogue

  function renderCards() {
    cards.replaceChildren(...configs.map((cfg) => h('button', {
      type: 'button',
      class: 'card card-button',
      'aria-pressed': String(selected === cfg),
      onclick: () => choose(cfg),
    },
    h('span', { class: 'card-title', text: cfg.label }),
    h('span', { class: 'card-text', text: cfg.description ?? '' }),
    h('span', { class: 'card-meta', text: `Up to ${formatNumber(cfg.maxRecords)} records` }))));
  }

  function choose(cfg) {
    if (running) return;
    selected = cfg;
    renderCards();
    renderForm(cfg);
    formHost.querySelector('h2')?.focus();
  }

  async function loadConfigs() {
    try {
      const list = await api('/api/export/configs');
      if (!alive) return;
      configs = Array.isArray(list) ? list : [];
      if (!configs.length) setAlert(pageAlert, 'No export types are available.');
      renderCards();
    } catch (err) {
      if (alive) setAlert(pageAlert, err.message);
    }
  }

  // ------------------------------------------------------------- export form

  function renderForm(cfg) {
    const headingId = uid('export-heading');
    const formatId = uid('format');
    const fromId = uid('from');
    const toId = uid('to');
    const progressId = uid('progress');
    const fields = Array.isArray(cfg.fields) ? cfg.fields : [];

    const formatSelect = h('select', { id: formatId, name: 'format' },
      FORMATS.map(([value, text]) => h('option', { value, text })));
    const today = Date.now();
    const days = Number.isFinite(Number(cfg.defaultDateRange)) ? Number(cfg.defaultDateRange) : 30;
    const fromInput = h('input', { type: 'date', id: fromId, name: 'startDate', value: isoDay(today - days * DAY_MS), required: true });
    const toInput = h('input', { type: 'date', id: toId, name: 'endDate', value: isoDay(today), required: true });

    const boxes = fields.map((field) => {
      const id = uid('field');
      const box = h('input', { type: 'checkbox', id, value: field.key, checked: Boolean(field.default) });
      return {
        field,
        box,
        row: h('div', { class: 'check' }, box,
          h('label', { for: id, text: `${field.label}${field.default ? ' (default)' : ''}` })),
      };
    });
    const setBoxes = (pick) => boxes.forEach(({ field, box }) => { box.checked = pick(field); });

    const formAlert = alertBox();
    const exportButton = h('button', { type: 'submit', class: 'button primary', text: 'Export' });
    const cancelButton = h('button', { type: 'button', class: 'button secondary', hidden: true, text: 'Cancel' });
    const progress = h('progress', { id: progressId, max: '1', value: '0' });
    const progressRow = h('div', { class: 'progress-row', hidden: true },
      h('label', { for: progressId, text: 'Export progress' }), progress);

    const form = h('form', { class: 'export-form stack', 'aria-labelledby': headingId, novalidate: true },
      h('h2', { id: headingId, tabindex: '-1', text: `Export ${cfg.label}` }),
      h('div', { class: 'form-row' },
        h('div', { class: 'field' }, h('label', { for: formatId, text: 'Format' }), formatSelect),
        h('div', { class: 'field' }, h('label', { for: fromId, text: 'From' }), fromInput),
        h('div', { class: 'field' }, h('label', { for: toId, text: 'To' }), toInput)),
      h('fieldset', {},
        h('legend', { text: 'Fields' }),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'button small', text: 'Select all', onclick: () => setBoxes(() => true) }),
          h('button', { type: 'button', class: 'button small', text: 'Default only', onclick: () => setBoxes((f) => Boolean(f.default)) })),
        h('div', { class: 'checks' }, boxes.map((b) => b.row))),
      formAlert,
      h('div', { class: 'actions' }, exportButton, cancelButton),
      progressRow);

    cancelButton.addEventListener('click', () => running?.abort());
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (running) return;
      const keys = boxes.filter((b) => b.box.checked).map((b) => b.field.key);
      const startDate = fromInput.value;
      const endDate = toInput.value;
      if (!keys.length) return setAlert(formAlert, 'Choose at least one field.');
      if (!startDate || !endDate) return setAlert(formAlert, 'Enter both dates.');
      if (startDate > endDate) return setAlert(formAlert, 'From must be on or before To.');
      runExport({
        cfg, format: formatSelect.value, keys, startDate, endDate,
        ui: { formAlert, exportButton, cancelButton, progress, progressRow },
      });
    });

    formHost.replaceChildren(form);
  }

  async function runExport({ cfg, format, keys, startDate, endDate, ui }) {
    const controller = new AbortController();
    running = controller;
    setAlert(ui.formAlert, '');
    ui.exportButton.disabled = true;
    ui.cancelButton.hidden = false;
    status.textContent = `Starting export of ${cfg.label}…`;

    const params = new URLSearchParams({ type: cfg.type, format, fields: keys.join(','), startDate, endDate });
    let finished = false;
    try {
      let res;
      try {
        res = await fetch(`/api/export?${params}`, { headers: authHeaders(), signal: controller.signal });
      } catch (err) {
        if (isAbort(err)) throw err;
        throw new Error(NETWORK_ERROR);
      }
      if (!res.ok) throw await responseError(res);

      const filename = parseFilename(res.headers.get('Content-Disposition')) ?? `${cfg.type}-export.${format}`;
      const exportId = res.headers.get('X-Export-Id');
      const limit = Number.parseInt(res.headers.get('X-Export-Limit') ?? '', 10) || Number(cfg.maxRecords) || 0;
      if (limit > 0) ui.progress.max = limit;
      else ui.progress.removeAttribute('max');
      ui.progress.value = 0;
      ui.progressRow.hidden = false;

      const chunks = [];
      let bytes = 0;
      let newlines = 0;
      let lastByte = 10;
      let lastPaint = 0;
      const paint = (rows) => {
        if (limit > 0) ui.progress.value = Math.min(rows, limit);
        status.textContent = `${formatNumber(rows)} rows · ${formatBytes(bytes)}`;
      };

      const reader = res.body.getReader();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (isAbort(err)) throw err;
          throw new Error('The export stopped before it finished. Try again.');
        }
        if (chunk.done) break;
        const value = chunk.value;
        chunks.push(value);
        bytes += value.length;
        for (let i = value.indexOf(10); i !== -1; i = value.indexOf(10, i + 1)) newlines += 1;
        if (value.length) lastByte = value[value.length - 1];
        const now = performance.now();
        if (now - lastPaint >= 100) {
          lastPaint = now;
          paint(estimateRows(format, newlines));
        }
      }
      // A last line without a trailing newline still counts.
      const rows = estimateRows(format, newlines + (bytes > 0 && lastByte !== 10 ? 1 : 0));
      paint(rows);
      finished = true;
      ui.cancelButton.hidden = true;

      saveFile(chunks, res.headers.get('Content-Type') || 'application/octet-stream', filename);

      let message = `Exported ${plural(rows, 'record')} to ${filename}`;
      if (exportId) {
        try {
          const entry = await api(`/api/export/history/${encodeURIComponent(exportId)}`);
          if (entry && Number.isFinite(Number(entry.record_count))) {
            message = `Exported ${plural(entry.record_count, 'record')} to ${filename}`;
            if (entry.truncated) message += `. The limit of ${formatNumber(limit || entry.record_count)} records cut the result.`;
          }
        } catch {
          // Keep our own count.
        }
      }
      if (alive) status.textContent = message;
    } catch (err) {
      if (!alive) return;
      if (isAbort(err) && !finished) {
        status.textContent = 'Export cancelled';
      } else {
        status.textContent = '';
        setAlert(ui.formAlert, err.message);
      }
    } finally {
      if (running === controller) running = null;
      if (alive) {
        ui.exportButton.disabled = false;
        ui.cancelButton.hidden = true;
        ui.progressRow.hidden = true;
        loadHistory();
      }
    }
  }

  // ------------------------------------------------------------- history

  const typeLabel = (type) => configs.find((c) => c.type === type)?.label ?? type ?? '—';

  function historyRow(entry) {
    const statusCell = h('td', {}, h('span', { class: `badge badge-${entry.status ?? 'unknown'}`, text: entry.status ?? '—' }));
    if (entry.truncated) statusCell.append(' ', h('span', { class: 'badge badge-warn', text: 'cut at limit' }));
    if (entry.error) {
      statusCell.title = entry.error;
      statusCell.append(h('span', { class: 'cell-note', text: entry.error }));
    }
    return h('tr', {},
      h('td', { text: formatTime(entry.created_at) }),
      h('td', { text: typeLabel(entry.export_type) }),
      h('td', { text: entry.format ? entry.format.toUpperCase() : '—' }),
      h('td', { class: 'num', text: formatNumber(entry.record_count) }),
      h('td', { class: 'num', text: formatBytes(entry.bytes) }),
      statusCell);
  }

  async function loadHistory(append = false) {
    const query = new URLSearchParams({ limit: '10' });
    if (append && historyToken) query.set('page_token', historyToken);
    moreButton.disabled = true;
    try {
      const page = await api(`/api/export/history?${query}`);
      if (!alive) return;
      setAlert(historyAlert, '');
      const entries = Array.isArray(page?.entries) ? page.entries : [];
      const rows = entries.map(historyRow);
      if (append) historyBody.append(...rows);
      else historyBody.replaceChildren(...rows);
      historyEmpty.hidden = historyBody.childElementCount > 0;
      historyToken = page?.next_page_token ?? null;
      moreButton.hidden = !historyToken;
    } catch (err) {
      if (alive) setAlert(historyAlert, err.message);
    } finally {
      moreButton.disabled = false;
    }
  }

  moreButton.addEventListener('click', () => loadHistory(true));

  loadConfigs();
  loadHistory();

  return () => {
    alive = false;
    running?.abort();
  };
}
