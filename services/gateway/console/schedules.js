// Schedules page: weekly and monthly exports delivered by email or as a stored file.
// One form creates and edits; the table pauses, resumes, deletes and opens a schedule's
// runs, whose stored files are time-limited links minted on every load.

import {
  alertBox, api, formatNumber, formatTime, h, humanize, pageHeading, setAlert, statusBox,
  tableWrap, uid,
} from '/console/api.js';

const FORMATS = [['csv', 'CSV'], ['json', 'JSON'], ['ndjson', 'NDJSON']];
const RANGES = [['last_week', 'Last week'], ['last_month', 'Last month'], ['all_time', 'All time']];
const FREQUENCIES = [['weekly', 'Weekly'], ['monthly', 'Monthly']];
const WEEKDAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const RUNS_REFRESH_MS = 5000;
const COLUMNS = ['Export', 'When', 'Range', 'Delivery', 'Next run', 'Status', 'Actions'];

const browserZone = () => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
};
const zones = () => {
  try {
    return ['UTC', ...Intl.supportedValuesOf('timeZone').filter((z) => z !== 'UTC')];
  } catch {
    return ['UTC'];
  }
};
const labelOf = (pairs, value) => pairs.find(([v]) => v === value)?.[1] ?? humanize(value);

/** "Weekly, Monday at 08:00 (Europe/Paris)" / "Monthly, day 31 at 07:15 (UTC)". */
function describeWhen(s) {
  const at = `at ${s.time_of_day} (${s.time_zone})`;
  if (s.frequency === 'weekly') return `Weekly, ${WEEKDAYS[(s.weekday ?? 1) - 1] ?? '—'} ${at}`;
  return `Monthly, day ${s.day_of_month ?? 1} ${at}`;
}

export function mount(root) {
  let alive = true;
  let configs = [];
  let schedules = [];
  let nextToken = null;
  let editing = null; // the schedule being edited, or null for a new one
  let busy = false; // a table action is in flight
  let saving = false; // the form is in flight
  let confirmingDelete = null;
  const openRuns = new Set();
  const runs = new Map(); // schedule id → runs array or Error

  const status = statusBox();
  const pageAlert = alertBox();
  const formHost = h('div');
  const listAlert = alertBox();
  const tbody = h('tbody');
  const table = h('table', { class: 'items' },
    h('caption', { text: 'Schedules' }),
    h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col', text: c })))),
    tbody);
  const empty = h('p', { class: 'muted', hidden: true, text: 'No schedules yet.' });
  const moreButton = h('button', { type: 'button', class: 'button secondary', hidden: true, text: 'More' });

  root.append(h('section', { class: 'page' },
    pageHeading('Schedules'),
    status,
    pageAlert,
    h('section', { class: 'panel', 'aria-labelledby': 'schedule-form-heading' }, formHost),
    h('section', { class: 'panel', 'aria-labelledby': 'schedules-heading' },
      h('h2', { id: 'schedules-heading', text: 'Your schedules' }),
      listAlert,
      tableWrap(table, 'Schedules table'),
      empty,
      h('div', { class: 'actions' }, moreButton))));

  const say = (message) => {
    setAlert(pageAlert, '');
    status.textContent = message;
  };
  const typeLabel = (type) => configs.find((c) => c.type === type)?.label ?? type ?? '—';

  // ------------------------------------------------------------- the form

  function renderForm() {
    const s = editing;
    const ids = {
      type: uid('sched-type'), format: uid('sched-format'), range: uid('sched-range'),
      frequency: uid('sched-frequency'), weekday: uid('sched-weekday'), day: uid('sched-day'),
      time: uid('sched-time'), zone: uid('sched-zone'), zones: uid('sched-zones'),
      email: uid('sched-email'), dayHint: uid('sched-day-hint'),
    };
    const select = (id, name, pairs, value) => {
      const el = h('select', { id, name }, pairs.map(([v, text]) => h('option', { value: v, text })));
      if (value !== undefined && value !== null) el.value = value;
      return el;
    };

    const typeSelect = select(ids.type, 'export_type', configs.map((c) => [c.type, c.label]), s?.export_type ?? configs[0]?.type);
    const formatSelect = select(ids.format, 'format', FORMATS, s?.format ?? 'csv');
    const rangeSelect = select(ids.range, 'date_range_type', RANGES, s?.date_range_type ?? 'last_week');
    const frequencySelect = select(ids.frequency, 'frequency', FREQUENCIES, s?.frequency ?? 'weekly');
    const weekdaySelect = select(ids.weekday, 'weekday', WEEKDAYS.map((d, i) => [String(i + 1), d]), String(s?.weekday ?? 1));
    const dayInput = h('input', {
      type: 'number', id: ids.day, name: 'day_of_month', min: '1', max: '31', inputmode: 'numeric',
      value: String(s?.day_of_month ?? 1), 'aria-describedby': ids.dayHint,
    });
    const timeInput = h('input', { type: 'time', id: ids.time, name: 'time_of_day', value: s?.time_of_day ?? '08:00', required: true });
    const zoneInput = h('input', {
      type: 'text', id: ids.zone, name: 'time_zone', list: ids.zones, autocomplete: 'off', spellcheck: 'false',
      value: s?.time_zone ?? browserZone(),
    });
    const zoneList = h('datalist', { id: ids.zones }, zones().map((z) => h('option', { value: z })));
    const method = s?.delivery_method ?? 'email';
    const radio = (value, text) => {
      const id = uid('sched-delivery');
      return h('div', { class: 'check' },
        h('input', { type: 'radio', id, name: 'delivery_method', value, checked: value === method }),
        h('label', { for: id, text }));
    };
    const emailInput = h('input', {
      type: 'email', id: ids.email, name: 'delivery_email', autocomplete: 'email',
      value: s?.delivery_email ?? '',
    });
    const emailField = h('div', { class: 'field' }, h('label', { for: ids.email, text: 'Email address' }), emailInput);
    const weekdayField = h('div', { class: 'field' }, h('label', { for: ids.weekday, text: 'Weekday' }), weekdaySelect);
    const dayField = h('div', { class: 'field' }, h('label', { for: ids.day, text: 'Day of month' }), dayInput,
      h('span', { id: ids.dayHint, class: 'muted small', text: '29–31 run on the last day of shorter months' }));

    const fieldsHost = h('div', { class: 'checks' });
    let boxes = [];
    const renderFields = () => {
      const cfg = configs.find((c) => c.type === typeSelect.value);
      const chosen = s && s.export_type === typeSelect.value ? new Set(s.field_selection ?? []) : null;
      boxes = (Array.isArray(cfg?.fields) ? cfg.fields : []).map((field) => {
        const id = uid('sched-field');
        const box = h('input', { type: 'checkbox', id, value: field.key, checked: chosen ? chosen.has(field.key) : Boolean(field.default) });
        return { field, box, row: h('div', { class: 'check' }, box, h('label', { for: id, text: `${field.label}${field.default ? ' (default)' : ''}` })) };
      });
      fieldsHost.replaceChildren(...boxes.map((b) => b.row));
    };
    const setBoxes = (pick) => boxes.forEach(({ field, box }) => { box.checked = pick(field); });
    const sync = () => {
      weekdayField.hidden = frequencySelect.value !== 'weekly';
      dayField.hidden = frequencySelect.value !== 'monthly';
      emailField.hidden = form.elements.delivery_method.value !== 'email';
    };

    const formAlert = alertBox();
    const headingText = s ? `Edit schedule: ${typeLabel(s.export_type)}` : 'New schedule';
    const submit = h('button', { type: 'submit', class: 'button primary', text: s ? 'Save changes' : 'Create schedule' });
    const cancel = s ? h('button', { type: 'button', class: 'button secondary', text: 'Cancel edit', onclick: () => startEdit(null) }) : null;
    const form = h('form', { class: 'stack', 'aria-labelledby': 'schedule-form-heading', novalidate: true },
      h('h2', { id: 'schedule-form-heading', tabindex: '-1', text: headingText }),
      h('div', { class: 'form-row' },
        h('div', { class: 'field' }, h('label', { for: ids.type, text: 'Export type' }), typeSelect),
        h('div', { class: 'field' }, h('label', { for: ids.format, text: 'Format' }), formatSelect),
        h('div', { class: 'field' }, h('label', { for: ids.range, text: 'Date range' }), rangeSelect)),
      h('div', { class: 'form-row' },
        h('div', { class: 'field' }, h('label', { for: ids.frequency, text: 'Frequency' }), frequencySelect),
        weekdayField,
        dayField,
        h('div', { class: 'field' }, h('label', { for: ids.time, text: 'Time' }), timeInput),
        h('div', { class: 'field' }, h('label', { for: ids.zone, text: 'Time zone' }), zoneInput, zoneList)),
      h('fieldset', {}, h('legend', { text: 'Delivery' }),
        h('div', { class: 'checks' }, radio('email', 'Email'), radio('download', 'Stored file with a download link')),
        h('div', { class: 'form-row' }, emailField)),
      h('fieldset', {}, h('legend', { text: 'Fields' }),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'button small', text: 'Select all', onclick: () => setBoxes(() => true) }),
          h('button', { type: 'button', class: 'button small', text: 'Default only', onclick: () => setBoxes((f) => Boolean(f.default)) })),
        fieldsHost),
      formAlert,
      h('div', { class: 'actions' }, submit, cancel));

    typeSelect.addEventListener('change', renderFields);
    frequencySelect.addEventListener('change', sync);
    form.addEventListener('change', (event) => {
      if (event.target.name === 'delivery_method') sync();
    });
    // The REST names of the controls, so an error naming a field marks it.
    const controls = {
      export_type: typeSelect, format: formatSelect, date_range_type: rangeSelect,
      frequency: frequencySelect, weekday: weekdaySelect, day_of_month: dayInput,
      time_of_day: timeInput, time_zone: zoneInput, delivery_email: emailInput,
      field_selection: fieldsHost,
    };

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (saving) return;
      for (const el of Object.values(controls)) el.removeAttribute('aria-invalid');
      setAlert(formAlert, '');
      const keys = boxes.filter((b) => b.box.checked).map((b) => b.field.key);
      if (!keys.length) return setAlert(formAlert, 'Choose at least one field.');
      const delivery = form.elements.delivery_method.value;
      const body = {
        export_type: typeSelect.value,
        format: formatSelect.value,
        field_selection: keys,
        date_range_type: rangeSelect.value,
        frequency: frequencySelect.value,
        time_of_day: timeInput.value,
        time_zone: zoneInput.value.trim(),
        delivery_method: delivery,
      };
      if (body.frequency === 'weekly') body.weekday = Number(weekdaySelect.value);
      else body.day_of_month = Number(dayInput.value);
      if (delivery === 'email') body.delivery_email = emailInput.value.trim();
      saving = true;
      submit.disabled = true;
      try {
        const saved = s
          ? await api(`/api/scheduled-exports/${encodeURIComponent(s.id)}`, { method: 'PATCH', json: body })
          : await api('/api/scheduled-exports', { method: 'POST', json: body });
        if (!alive) return;
        say(`${s ? 'Saved' : 'Created'} schedule for ${typeLabel(saved.export_type)}, next run ${formatTime(saved.next_run_at)}`);
        editing = null;
        renderForm();
        await load();
      } catch (err) {
        if (!alive) return;
        setAlert(formAlert, err.message);
        const target = controls[err.field];
        if (target) {
          target.setAttribute('aria-invalid', 'true');
          (target === fieldsHost ? target.querySelector('input') : target)?.focus();
        }
      } finally {
        saving = false;
        submit.disabled = false;
      }
    });

    renderFields();
    formHost.replaceChildren(form);
    sync();
  }

  function startEdit(schedule) {
    editing = schedule;
    renderForm();
    formHost.querySelector('h2')?.focus();
  }

  // ------------------------------------------------------------- the table

  function renderRuns(s) {
    const data = runs.get(s.id);
    const cell = h('td', { class: 'details', colspan: String(COLUMNS.length) });
    if (!data) {
      cell.append(h('p', { class: 'muted', text: 'Loading runs…' }));
    } else if (data instanceof Error) {
      cell.append(h('p', { class: 'alert', text: `Could not load runs: ${data.message}` }));
    } else {
      const label = `Runs of ${typeLabel(s.export_type)} ${s.id.slice(-8)}`;
      const runTable = h('table', { class: 'nested' },
        h('caption', { text: label }),
        h('thead', {}, h('tr', {}, ['Slot', 'Status', 'Attempts', 'Last error', 'File']
          .map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, data.length
          ? data.map((r) => h('tr', {},
            h('td', { text: formatTime(r.scheduled_for) }),
            h('td', {},
              h('span', { class: `badge badge-${r.status}`, text: r.status }),
              r.late ? [' ', h('span', { class: 'badge badge-warn', text: 'late' })] : null),
            h('td', { class: 'num', text: formatNumber(r.attempts) }),
            h('td', { class: 'wrap', text: r.last_error ?? '—' }),
            h('td', {}, r.download_url
              ? [h('a', { href: r.download_url, download: '', 'data-focus': `download:${r.id}`, 'aria-label': `Download the run of ${formatTime(r.scheduled_for)}`, text: 'Download' }),
                h('span', { class: 'cell-note', text: `Link valid until ${formatTime(r.link_expires_at)}` })]
              : '—')))
          : h('tr', {}, h('td', { colspan: '5', class: 'muted', text: 'No runs yet.' }))));
      cell.append(tableWrap(runTable, `${label} table`));
    }
    return h('tr', { class: 'details-row', id: `runs-${s.id}` }, cell);
  }

  function scheduleRows(s) {
    const name = `${typeLabel(s.export_type)} ${s.id.slice(-8)}`;
    const open = openRuns.has(s.id);
    const button = (text, kind, onclick, extra = {}) => h('button', {
      type: 'button', class: `button small${kind ? ` ${kind}` : ''}`, 'aria-label': `${text} ${name}`,
      'data-focus': `${text}:${s.id}`, disabled: busy, text, onclick, ...extra,
    });
    const actions = confirmingDelete === s.id
      ? [h('span', { class: 'cell-note', text: 'Delete this schedule and its runs?' }),
        button('Confirm delete', 'danger', () => remove(s)),
        button('Keep', 'secondary', () => { confirmingDelete = null; renderTable(`Delete:${s.id}`); })]
      : [button(s.enabled ? 'Pause' : 'Resume', 'secondary', () => toggle(s)),
        button('Edit', 'secondary', () => startEdit(s)),
        button('Runs', 'secondary', () => toggleRuns(s), { 'aria-expanded': String(open), 'aria-controls': open ? `runs-${s.id}` : null }),
        button('Delete', 'danger', () => { confirmingDelete = s.id; renderTable(`Confirm delete:${s.id}`); })];
    const row = h('tr', {},
      h('td', {}, h('span', { class: 'op', text: typeLabel(s.export_type) }),
        h('span', { class: 'cell-note', text: `${s.format.toUpperCase()} · ${formatNumber(s.field_selection?.length ?? 0)} fields` })),
      h('td', { text: describeWhen(s) }),
      h('td', { text: labelOf(RANGES, s.date_range_type) }),
      h('td', { class: 'wrap', text: s.delivery_method === 'email' ? `Email to ${s.delivery_email ?? '—'}` : 'Stored file' }),
      h('td', { text: s.enabled ? formatTime(s.next_run_at) : '—' }),
      h('td', {}, h('span', { class: `badge ${s.enabled ? 'badge-connected' : 'badge-warn'}`, text: s.enabled ? 'active' : 'paused' })),
      h('td', { class: 'row-actions' }, actions));
    return open ? [row, renderRuns(s)] : [row];
  }

  function renderTable(focusKey = null) {
    const active = document.activeElement;
    const key = focusKey ?? (table.contains(active) ? active.closest('[data-focus]')?.dataset.focus : null);
    tbody.replaceChildren(...schedules.flatMap(scheduleRows));
    empty.hidden = schedules.length > 0;
    if (key) [...tbody.querySelectorAll('[data-focus]')].find((el) => el.dataset.focus === key)?.focus();
  }

  // ------------------------------------------------------------- data

  async function load({ append = false, focusKey = null } = {}) {
    const query = new URLSearchParams({ limit: '50' });
    if (append && nextToken) query.set('page_token', nextToken);
    try {
      const page = await api(`/api/scheduled-exports?${query}`);
      if (!alive) return;
      setAlert(listAlert, '');
      const list = Array.isArray(page?.scheduled_exports) ? page.scheduled_exports : [];
      schedules = append ? [...schedules, ...list] : list;
      nextToken = page?.next_page_token ?? null;
      moreButton.hidden = !nextToken;
      renderTable(focusKey);
      for (const id of openRuns) loadRuns(id);
    } catch (err) {
      if (alive) setAlert(listAlert, err.message);
    }
  }

  async function loadRuns(id) {
    try {
      runs.set(id, await api(`/api/scheduled-exports/${encodeURIComponent(id)}/runs?limit=20`));
    } catch (err) {
      runs.set(id, err);
    }
    if (alive && openRuns.has(id)) renderTable();
  }

  function toggleRuns(s) {
    if (openRuns.has(s.id)) openRuns.delete(s.id);
    else {
      openRuns.add(s.id);
      loadRuns(s.id);
    }
    renderTable(`Runs:${s.id}`);
  }

  async function act(label, work, focusKey) {
    if (busy) return;
    busy = true;
    setAlert(pageAlert, '');
    renderTable(focusKey);
    try {
      const message = await work();
      if (alive) say(message);
    } catch (err) {
      if (alive) setAlert(pageAlert, `${label}: ${err.message}`);
    } finally {
      busy = false;
    }
    if (!alive) return;
    renderTable(focusKey); // enabled again, even if the reload fails
    await load({ focusKey });
  }

  const toggle = (s) => act(s.enabled ? 'Pause failed' : 'Resume failed', async () => {
    await api(`/api/scheduled-exports/${encodeURIComponent(s.id)}`, { method: 'PATCH', json: { enabled: !s.enabled } });
    return `${s.enabled ? 'Paused' : 'Resumed'} ${typeLabel(s.export_type)}`;
  }, `${s.enabled ? 'Resume' : 'Pause'}:${s.id}`);

  const remove = (s) => act('Delete failed', async () => {
    confirmingDelete = null;
    await api(`/api/scheduled-exports/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
    openRuns.delete(s.id);
    if (editing?.id === s.id) startEdit(null);
    return `Deleted the ${typeLabel(s.export_type)} schedule`;
  }, null);

  moreButton.addEventListener('click', () => load({ append: true }));
  // Open run lists follow a run from pending to delivered without a reload.
  const timer = setInterval(() => {
    if (!document.hidden && !busy) for (const id of openRuns) loadRuns(id);
  }, RUNS_REFRESH_MS);

  (async () => {
    try {
      const list = await api('/api/export/configs');
      configs = Array.isArray(list) ? list : [];
    } catch (err) {
      if (alive) setAlert(pageAlert, err.message);
    }
    if (!alive) return;
    renderForm();
    await load();
  })();

  return () => {
    alive = false;
    clearInterval(timer);
  };
}
