// Integrations page: setup wizard and one card per provider with connect /
// disconnect controls.

import {
  alertBox, api, formatTime, h, humanize, pageHeading, setAlert, statusBox, uid,
} from '/console/api.js';

const LINKED = new Set(['connected', 'error', 'expired']);

function metaValue(value) {
  if (value === null || value === undefined || value === '') return '—';
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
  if (typeof value === 'boolean') return value ? 'Yes' : 'No';
  if (typeof value === 'number') return value.toLocaleString('en-US');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

const isHttpUrl = (url) => typeof url === 'string' && /^https?:\/\//i.test(url);

export function mount(root, { flash } = {}) {
  let alive = true;

  const status = statusBox();
  const pageAlert = alertBox();
  const setupAlert = alertBox();
  const setupBody = h('div', { class: 'setup-body' });
  const listAlert = alertBox();
  const cards = h('div', { class: 'cards integration-cards' });

  root.append(h('section', { class: 'page' },
    pageHeading('Integrations'),
    status,
    pageAlert,
    h('section', { class: 'panel', 'aria-labelledby': 'setup-heading' },
      h('h2', { id: 'setup-heading', text: 'Setup' }),
      setupAlert,
      setupBody),
    h('section', { class: 'panel', 'aria-labelledby': 'providers-heading' },
      h('h2', { id: 'providers-heading', text: 'Providers' }),
      listAlert,
      cards)));

  if (flash?.kind === 'success') status.textContent = flash.message;
  else if (flash?.kind === 'error') setAlert(pageAlert, flash.message);

  const say = (message) => {
    setAlert(pageAlert, '');
    status.textContent = message;
  };

  // ------------------------------------------------------------- setup wizard

  function renderSetup(progress, focusKey = null) {
    const steps = Array.isArray(progress?.steps) ? progress.steps : [];
    const done = steps.filter((s) => s.status === 'completed' || s.status === 'skipped').length;
    const barId = uid('setup-progress');
    const list = h('ol', { class: 'steps' }, steps.map((step) => {
      const label = step.label ?? humanize(step.key);
      const button = (text, next, extra = '') => h('button', {
        type: 'button',
        class: `button small ${extra}`.trim(),
        'aria-label': `${text} ${label}`,
        text,
        onclick: () => updateStep(step, label, next),
      });
      return h('li', { class: `step step-${step.status}`, 'data-key': step.key },
        h('span', { class: 'step-label', text: label }),
        h('span', { class: `badge badge-${step.status}`, text: step.status ?? '—' }),
        h('span', { class: 'step-actions' }, step.status === 'pending'
          ? [button('Complete', 'completed', 'primary'), button('Skip', 'skipped', 'secondary')]
          : [button('Reset', 'pending', 'secondary')]));
    }));
    setupBody.replaceChildren(
      h('div', { class: 'progress-row' },
        h('label', { for: barId, text: 'Setup progress' }),
        h('progress', { id: barId, max: String(Math.max(steps.length, 1)), value: String(done) })),
      h('p', { class: 'muted', text: progress?.complete ? `Setup complete: ${done} of ${steps.length} steps done` : `${done} of ${steps.length} steps done` }),
      list);
    if (focusKey) {
      const item = [...list.children].find((li) => li.dataset.key === focusKey);
      item?.querySelector('button')?.focus();
    }
  }

  async function loadSetup() {
    try {
      const progress = await api('/api/settings/setup-progress');
      if (!alive) return;
      setAlert(setupAlert, '');
      renderSetup(progress);
    } catch (err) {
      if (alive) setAlert(setupAlert, err.message);
    }
  }

  async function updateStep(step, label, next) {
    setupBody.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    setAlert(setupAlert, '');
    try {
      const progress = await api(`/api/settings/setup-progress/${encodeURIComponent(step.key)}`, {
        method: 'PATCH', json: { status: next },
      });
      if (!alive) return;
      renderSetup(progress, step.key);
      say(`${label} ${next === 'pending' ? 'reset' : next}`);
    } catch (err) {
      if (!alive) return;
      setAlert(setupAlert, err.message);
      setupBody.querySelectorAll('button').forEach((b) => { b.disabled = false; });
    }
  }

  // ------------------------------------------------------------- provider cards

  function card(integration) {
    const name = integration.name ?? humanize(integration.provider);
    const provider = integration.provider;
    const headingId = uid('integration');
    const cardAlert = alertBox();
    const linked = LINKED.has(integration.status);
    const meta = Object.entries(integration.metadata ?? {});

    const withBusy = async (controls, work) => {
      controls.forEach((c) => { c.disabled = true; });
      setAlert(cardAlert, '');
      try {
        await work();
      } catch (err) {
        if (alive) setAlert(cardAlert, err.message);
      } finally {
        controls.forEach((c) => { c.disabled = false; });
      }
    };

    let controls;
    if (linked) {
      const button = h('button', { type: 'button', class: 'button danger', text: `Disconnect ${name}` });
      button.addEventListener('click', () => {
        if (!window.confirm(`Disconnect ${name}?`)) return;
        withBusy([button], async () => {
          await api(`/api/integrations/${encodeURIComponent(provider)}`, { method: 'DELETE' });
          if (!alive) return;
          say(`${name} disconnected`);
          await Promise.all([loadIntegrations(provider), loadSetup()]);
        });
      });
      controls = h('div', { class: 'actions' }, button);
    } else if (integration.auth_type === 'api_key') {
      const inputId = uid('api-key');
      const input = h('input', { type: 'password', id: inputId, name: 'apiKey', autocomplete: 'off', spellcheck: 'false' });
      const submit = h('button', { type: 'submit', class: 'button primary', text: `Connect ${name}` });
      controls = h('form', { class: 'stack connect-form' },
        h('label', { for: inputId, text: `${name} API key` }), input, h('div', { class: 'actions' }, submit));
      controls.addEventListener('submit', (event) => {
        event.preventDefault();
        const apiKey = input.value.trim();
        if (!apiKey) {
          setAlert(cardAlert, `Enter the ${name} API key.`);
          input.focus();
          return;
        }
        withBusy([input, submit], async () => {
          await api(`/api/integrations/${encodeURIComponent(provider)}/connect`, { method: 'POST', json: { apiKey } });
          if (!alive) return;
          input.value = '';
          say(`${name} connected`);
          await Promise.all([loadIntegrations(provider), loadSetup()]);
        });
      });
    } else if (integration.auth_type === 'oauth') {
      const isShopify = provider === 'shopify';
      const submit = h('button', { type: 'submit', class: 'button primary', text: `Connect ${name}` });
      let shopInput = null;
      const parts = [];
      if (isShopify) {
        const shopId = uid('shop');
        shopInput = h('input', {
          type: 'text', id: shopId, name: 'shop', placeholder: 'your-store.myshopify.com',
          autocomplete: 'off', spellcheck: 'false', inputmode: 'url',
          value: integration.metadata?.shop_domain ?? '',
        });
        parts.push(h('label', { for: shopId, text: 'Shop domain' }), shopInput);
      }
      controls = h('form', { class: 'stack connect-form' }, parts, h('div', { class: 'actions' }, submit));
      controls.addEventListener('submit', (event) => {
        event.preventDefault();
        let path = `/api/integrations/${encodeURIComponent(provider)}/install`;
        if (shopInput) {
          const shop = shopInput.value.trim();
          if (!shop) {
            setAlert(cardAlert, 'Enter your shop domain.');
            shopInput.focus();
            return;
          }
          path += `?${new URLSearchParams({ shop })}`;
        }
        withBusy([submit, shopInput].filter(Boolean), async () => {
          const answer = await api(path, { headers: { Accept: 'application/json' } });
          if (!isHttpUrl(answer?.authorize_url)) throw new Error(`The gateway did not return a ${name} sign-in address.`);
          window.location.assign(answer.authorize_url);
        });
      });
    }

    const facts = [
      integration.required ? 'Required' : 'Optional',
      integration.connected_at && linked ? `Connected ${formatTime(integration.connected_at)}` : null,
      integration.token_expires_at ? `Token expires ${formatTime(integration.token_expires_at)}` : null,
    ].filter(Boolean).join(' · ');

    return h('article', {
      class: `card integration status-${integration.status}`, 'aria-labelledby': headingId, 'data-provider': provider,
    },
      h('div', { class: 'card-head' },
        h('h3', { id: headingId, tabindex: '-1', text: name }),
        h('span', { class: `badge badge-${integration.status}` },
          h('span', { class: 'visually-hidden', text: 'Status: ' }), humanize(integration.status ?? 'unknown'))),
      integration.description ? h('p', { text: integration.description }) : null,
      h('p', { class: 'muted small', text: facts }),
      integration.last_error
        ? h('p', { class: 'error-text', text: `Last error: ${integration.last_error}${integration.last_error_at ? ` (${formatTime(integration.last_error_at)})` : ''}` })
        : null,
      meta.length
        ? h('dl', { class: 'meta' }, meta.map(([k, v]) => [h('dt', { text: humanize(k) }), h('dd', { text: metaValue(v) })]))
        : null,
      cardAlert,
      controls ?? null,
      isHttpUrl(integration.docs_url)
        ? h('p', { class: 'small' }, h('a', { href: integration.docs_url, rel: 'noopener noreferrer', target: '_blank' }, `${name} documentation`, h('span', { class: 'visually-hidden', text: ' (opens in a new tab)' })))
        : null);
  }

  /** Loads the cards; `focusProvider` gets focus back after its card is rebuilt. */
  async function loadIntegrations(focusProvider = null) {
    try {
      const list = await api('/api/integrations');
      if (!alive) return;
      setAlert(listAlert, '');
      const sorted = (Array.isArray(list) ? list : [])
        .slice()
        .sort((a, b) => (a.setup_order ?? 999) - (b.setup_order ?? 999));
      cards.replaceChildren(...sorted.map(card));
      if (!sorted.length) cards.append(h('p', { class: 'muted', text: 'No integrations are available.' }));
      if (focusProvider) {
        const article = [...cards.children].find((el) => el.dataset.provider === focusProvider);
        article?.querySelector('input, button, h3')?.focus();
      }
    } catch (err) {
      if (alive) setAlert(listAlert, err.message);
    }
  }

  loadSetup();
  loadIntegrations();

  return () => {
    alive = false;
  };
}
