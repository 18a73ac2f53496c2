// edge-scribe review page: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Everything shown is built with textContent (never innerHTML), so transcript and note text can
// never become markup. Error messages in #error come from fixed strings or the server's
// `{"error"}` (which carries no patient data) and never quote note or transcript text.
'use strict';

(() => {
  // ---------------------------------------------------------------- small helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  /** Creates an element: attrs may hold class, text, dataset, on<event> handlers, attributes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** replaceChildren that skips null/false children. */
  const fill = (node, ...children) => node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));

  const clone = (value) => JSON.parse(JSON.stringify(value));

  function uuid() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b); // available on plain http too, unlike crypto.randomUUID
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function clock(ms) {
    const total = Math.max(0, Math.floor((ms || 0) / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
  }

  function when(text, withSeconds) {
    if (!text) return '';
    const d = new Date(text);
    if (Number.isNaN(d.getTime())) return String(text);
    return d.toLocaleString(undefined, {
      dateStyle: 'medium',
      timeStyle: withSeconds ? 'medium' : 'short',
    });
  }

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many || one + 's'}`;
  const countOf = (v) => (Array.isArray(v) ? v.length : Number(v) || 0);
  const cssId = (id) => (window.CSS && CSS.escape ? CSS.escape(id) : String(id).replace(/"/g, '\\"'));

  // ---------------------------------------------------------------- state

  const state = {
    me: null,
    encounters: [],
    view: null, // EncounterView as last loaded
    loaded: null, // its sections, untouched: what "unsaved changes" compares against
    sections: null, // the working copy the clinician edits
    editing: new Map(), // statement id -> text in its open editor
    selected: null, // statement id whose evidence is shown
    segments: new Map(), // segment id -> segment
    versions: [],
    signed: [], // signed note JSON: original first, then addenda
    draftVersion: null, // the version number of the AI draft
    speakerEditing: null, // segment id whose speaker choices are open
    speakerSaving: false,
    busy: false,
  };

  const readOnly = () => !state.view || state.view.signed || !state.me || state.me.role !== 'clinician';

  // ---------------------------------------------------------------- errors, status

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const options = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (_) {
      throw new ApiError(0, 'The scribe box did not answer. Check the connection and try again.');
    }
    let data = null;
    if ((response.headers.get('content-type') || '').includes('application/json')) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const message = data && typeof data.error === 'string' ? data.error : '';
      throw new ApiError(response.status, message);
    }
    return data;
  }

  function showError(message) {
    const box = $('#error');
    box.replaceChildren(
      el('span', { class: 'error-text', text: message }),
      el('button', {
        type: 'button',
        class: 'error-close',
        'aria-label': 'Dismiss message',
        text: '×',
        onclick: clearError,
      }),
    );
    box.hidden = false;
  }

  function clearError() {
    const box = $('#error');
    box.hidden = true;
    box.replaceChildren();
  }

  let toastTimer = null;
  function toast(message) {
    const box = $('#toast');
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      box.hidden = true;
    }, 6000);
  }

  /** Turns a failed call into a message for #error. Never includes note or transcript text. */
  function explain(error, doing) {
    if (!(error instanceof ApiError)) return `Could not ${doing}: the page hit an unexpected problem.`;
    const detail = error.message ? ` (${error.message})` : '';
    switch (error.status) {
      case 0:
        return error.message;
      case 400:
        return `Could not ${doing}: the request was refused${detail}.`;
      case 401:
        return 'Your session has ended. Sign in again.';
      case 403:
        return `Your role does not allow you to ${doing}.`;
      case 404:
        return `Could not ${doing}: that encounter is not available to you.`;
      case 409:
        return `Could not ${doing}: the note changed since you opened it (a newer version was saved or it was signed)${detail}. Reopen the encounter to continue.`;
      case 423:
        return 'This account is locked after repeated failed sign-ins. Try again in 15 minutes or ask IT.';
      default:
        return `Could not ${doing}: the server answered ${error.status}${detail}.`;
    }
  }

  /** Reports a failure; a 401 also returns to the sign-in form. */
  function fail(error, doing) {
    if (error instanceof ApiError && error.status === 401 && state.me) {
      showLogin();
      showError('Your session has ended. Sign in again.');
      return;
    }
    showError(explain(error, doing));
  }

  // ---------------------------------------------------------------- sign in / out

  function showLogin() {
    state.me = null;
    state.encounters = [];
    $('#encounter-list').replaceChildren();
    resetEncounter();
    $('#app-view').hidden = true;
    $('#user-box').hidden = true;
    $('#login-view').hidden = false;
    $('#login-password').value = '';
    $('#login-username').focus();
  }

  async function onLogin(event) {
    event.preventDefault();
    clearError();
    const username = $('#login-username').value.trim();
    const password = $('#login-password').value;
    if (!username || !password) {
      showError('Enter your username and password.');
      (username ? $('#login-password') : $('#login-username')).focus();
      return;
    }
    const button = $('#login-submit');
    button.disabled = true;
    button.textContent = 'Signing in…';
    try {
      const answer = await api('POST', '/api/login', { username, password });
      $('#login-password').value = '';
      await enterApp(answer && answer.user ? answer.user : await api('GET', '/api/me'));
    } catch (error) {
      $('#login-password').value = '';
      if (error instanceof ApiError && error.status === 401) showError('Wrong username or password.');
      else showError(explain(error, 'sign in'));
      $('#login-password').focus();
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  }

  async function onLogout() {
    if (isDirty() && !(await confirmDialog({
      title: 'Sign out and discard changes?',
      body: [el('p', { text: 'Your unsaved changes to this note will be lost.' })],
      ok: 'Discard and sign out',
      danger: true,
    }))) return;
    try {
      await api('POST', '/api/logout');
    } catch (_) {
      // Signed out either way.
    }
    clearError();
    history.replaceState(null, '', location.pathname);
    showLogin();
  }

  const ROLE_NAMES = { clinician: 'Clinician', reviewer: 'Reviewer', admin: 'IT administrator', auditor: 'Auditor' };

  async function enterApp(user) {
    state.me = user;
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    $('#user-box').hidden = false;
    $('#user-name').textContent = user.username;
    $('#user-role').textContent = ROLE_NAMES[user.role] || user.role;
    $('#pair-form').hidden = user.role !== 'clinician';
    resetEncounter();
    await loadEncounters();
    const match = /^#\/encounters\/([^/]+)$/.exec(location.hash);
    if (match && state.encounters.some((e) => e.id === decodeURIComponent(match[1]))) {
      await openEncounter(decodeURIComponent(match[1]));
    }
  }

  // ---------------------------------------------------------------- encounter list

  async function loadEncounters() {
    const list = $('#encounter-list');
    try {
      state.encounters = (await api('GET', '/api/encounters')) || [];
    } catch (error) {
      state.encounters = [];
      list.replaceChildren();
      $('#encounter-empty').hidden = true;
      if (error instanceof ApiError && error.status === 403) {
        const role = ROLE_NAMES[state.me.role] || state.me.role;
        $('#review-empty-text').textContent =
          `Signed in as ${role}. Notes, transcripts and audio are shown only to the clinician who saw the patient and to assigned reviewers.`;
        showError(`Your role (${role}) cannot view encounters.`);
      } else fail(error, 'load the encounter list');
      return;
    }
    renderEncounterList();
  }

  function renderEncounterList() {
    const list = $('#encounter-list');
    const current = state.view && state.view.id;
    list.replaceChildren(
      ...state.encounters.map((e) => {
        const flagged = countOf(e.flagged_sections);
        return el(
          'li',
          { dataset: { encounterId: e.id } },
          el(
            'button',
            {
              type: 'button',
              class: 'enc-item',
              'aria-current': e.id === current ? 'true' : null,
              onclick: () => openEncounter(e.id),
            },
            el('span', { class: 'enc-when', text: when(e.created_at) || 'Encounter' }),
            el('span', { class: 'enc-sub', text: `${templateName(e.template)} · ${statusName(e)}` }),
            el(
              'span',
              { class: 'enc-badges' },
              e.signed
                ? el('span', { class: 'badge badge-ok', text: 'Signed' })
                : el('span', { class: 'badge badge-neutral', text: 'Draft' }),
              flagged ? el('span', { class: 'badge badge-warn', text: `${flagged} flagged` }) : null,
            ),
          ),
        );
      }),
    );
    $('#encounter-empty').hidden = state.encounters.length > 0;
  }

  const TEMPLATE_NAMES = { soap: 'SOAP note', 'history-and-physical': 'History & physical', 'follow-up': 'Follow-up' };
  const templateName = (t) => TEMPLATE_NAMES[t] || (t ? String(t) : 'Note');
  const statusName = (e) => (e.signed ? 'signed' : String(e.status || '').replace(/_/g, ' '));

  // ---------------------------------------------------------------- opening an encounter

  function resetEncounter() {
    state.view = null;
    state.loaded = null;
    state.sections = null;
    state.editing.clear();
    state.selected = null;
    state.segments.clear();
    state.speakerEditing = null;
    state.versions = [];
    state.signed = [];
    // Nothing of a closed encounter stays in the page, hidden or not.
    for (const selector of ['#note', '#transcript', '#alerts', '#versions', '#diff', '#attestation', '#codes']) {
      $(selector).replaceChildren();
    }
    $('#attestation').hidden = true;
    $('#diff-box').hidden = true;
    $('#enc-title').textContent = '';
    $('#review-body').hidden = true;
    $('#review-empty').hidden = false;
    $('#review-empty-text').textContent = 'Select an encounter to review its draft note.';
    const audio = $('#audio');
    audio.pause();
    audio.removeAttribute('src');
  }

  async function openEncounter(id) {
    if (state.view && state.view.id !== id && isDirty()) {
      const discard = await confirmDialog({
        title: 'Discard unsaved changes?',
        body: [el('p', { text: 'You have changes to this note that are not saved as a version yet.' })],
        ok: 'Discard changes',
        danger: true,
      });
      if (!discard) return;
    }
    clearError();
    let view;
    try {
      view = await api('GET', `/api/encounters/${encodeURIComponent(id)}`);
    } catch (error) {
      fail(error, 'open the encounter');
      return;
    }
    resetEncounter();
    acceptView(view);
    history.replaceState(null, '', `#/encounters/${encodeURIComponent(id)}`);
    renderEncounterList();
    renderAll();
    await Promise.all([loadVersions(), view.signed ? loadSigned() : null]);
    $('#review').focus({ preventScroll: true });
  }

  function acceptView(view) {
    state.view = view;
    state.loaded = clone(view.sections || []);
    state.sections = clone(view.sections || []);
    state.editing.clear();
    state.segments.clear();
    for (const segment of view.transcript || []) state.segments.set(segment.id, segment);
  }

  async function reloadView() {
    const view = await api('GET', `/api/encounters/${encodeURIComponent(state.view.id)}`);
    const selected = state.selected;
    acceptView(view);
    state.selected = selected;
    renderAll();
  }

  function renderAll() {
    const view = state.view;
    $('#review-empty').hidden = true;
    $('#review-body').hidden = false;
    $('#enc-title').textContent = `${templateName(view.template)} · ${when(view.created_at)}`;
    const meta = [];
    if (view.audio_duration_ms) meta.push(`Visit length ${clock(view.audio_duration_ms)}`);
    meta.push(plural((view.transcript || []).length, 'transcript segment'));
    meta.push(`version ${view.version}`);
    if (view.signed) meta.push('signed');
    else if (state.me.role !== 'clinician') meta.push('read-only');
    $('#enc-meta').textContent = meta.join(' · ');
    renderAlerts();
    renderNote();
    renderTranscript();
    renderCodes();
    renderToolbar();
    if (!view.signed) $('#attestation').hidden = true;
  }

  // ---------------------------------------------------------------- alerts (shown first)

  function renderAlerts() {
    const view = state.view;
    const box = $('#alerts');
    const items = [];
    if (!view.signed) {
      for (const section of state.sections) {
        if (section.status === 'insufficient_input') {
          const written = section.statements.some((s) => s.state !== 'rejected' && s.text.trim());
          items.push(
            el(
              'div',
              { class: `alert alert-flag${written ? ' alert-done' : ''}`, dataset: { alert: 'flagged', section: section.name } },
              el('span', { class: 'alert-kind', text: written ? 'Written by you' : 'Needs your input' }),
              el(
                'p',
                {},
                el('strong', { text: section.name }),
                written
                  ? ': the conversation did not support a draft; you added text.'
                  : ': the conversation did not give enough to draft this section. Write it yourself or leave it empty.',
              ),
              written || readOnly()
                ? null
                : el('button', {
                    type: 'button',
                    class: 'btn btn-small',
                    text: `Write ${section.name}`,
                    onclick: () => addStatement(section.name),
                  }),
            ),
          );
        }
      }
    }
    const gaps = view.gaps || [];
    if (gaps.length) {
      items.push(
        el(
          'div',
          { class: 'alert alert-gap', dataset: { alert: 'gaps' } },
          el('span', { class: 'alert-kind', text: `Documentation ${gaps.length === 1 ? 'gap' : 'gaps'}` }),
          el('ul', {}, gaps.map((g) => el('li', { dataset: { rule: g.rule || '' }, text: g.message || g.rule }))),
        ),
      );
    }
    const rejected = view.verifier_rejected || [];
    if (rejected.length) {
      items.push(
        el(
          'div',
          { class: 'alert alert-verifier', dataset: { alert: 'verifier' } },
          el('span', { class: 'alert-kind', text: 'Verifier notes' }),
          el('p', {
            text: `${plural(rejected.length, 'AI statement')} left out because the transcript did not support ${rejected.length === 1 ? 'it' : 'them'}:`,
          }),
          el(
            'ul',
            {},
            rejected.map((r) =>
              el('li', {}, el('strong', { text: r.section }), ` — ${r.reason}`, r.origin ? el('span', { class: 'muted', text: ` (${originName(r.origin)})` }) : null),
            ),
          ),
        ),
      );
    }
    box.replaceChildren(...items);
    box.hidden = items.length === 0;
  }

  function renderCodes() {
    const codes = state.view.codes || [];
    const box = $('#codes');
    if (!codes.length) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.replaceChildren(
      el('div', { class: 'card-head' }, el('h3', { id: 'codes-heading', text: 'ICD-10-CM suggestions' }), el('span', { class: 'muted', text: 'for the assessment; not billed automatically' })),
      el(
        'ul',
        { class: 'code-list' },
        codes.map((c) => {
          const missing = Array.isArray(c.missing) ? c.missing.join(', ') : c.missing;
          return el(
            'li',
            {},
            el('code', { text: c.code }),
            el('span', { text: ` ${c.title || ''}` }),
            missing ? el('span', { class: 'code-missing', text: `More specific code needs: ${missing}` }) : null,
          );
        }),
      ),
    );
    box.hidden = false;
  }

  // ---------------------------------------------------------------- the note

  const ORIGIN_NAMES = { extraction: 'AI · extracted', narrative: 'AI · patient history', llm: 'AI · rephrased', clinician: 'Your text' };
  const originName = (o) => ORIGIN_NAMES[o] || o;
  const STATE_NAMES = { pending: 'Not reviewed', accepted: 'Accepted', edited: 'Edited', rejected: 'Rejected', added: 'Added' };

  function findStatement(id) {
    for (const section of state.sections || []) {
      const index = section.statements.findIndex((s) => s.id === id);
      if (index >= 0) return { section, index, statement: section.statements[index] };
    }
    return null;
  }

  function loadedStatement(id) {
    for (const section of state.loaded || []) {
      const found = section.statements.find((s) => s.id === id);
      if (found) return found;
    }
    return null;
  }

  function renderNote() {
    const note = $('#note');
    const locked = readOnly();
    note.classList.toggle('locked', locked);
    note.setAttribute('aria-readonly', locked ? 'true' : 'false');
    note.dataset.locked = locked ? 'true' : 'false';
    note.replaceChildren(...state.sections.map((section) => renderSection(section, locked)));
    renderProgress();
  }

  function renderSection(section, locked) {
    const flagged = section.status === 'insufficient_input';
    const visible = section.statements;
    return el(
      'section',
      { class: `note-section${flagged ? ' flagged' : ''}`, dataset: { section: section.name, status: section.status } },
      el(
        'header',
        { class: 'section-head' },
        el('h3', { text: section.name }),
        flagged ? el('span', { class: 'badge badge-warn', text: 'Insufficient input' }) : null,
      ),
      visible.length
        ? el('ol', { class: 'statements' }, visible.map((s) => renderStatement(s, locked)))
        : el('p', { class: 'section-empty', text: flagged ? 'Nothing drafted: not enough in the conversation.' : 'No statements.' }),
      locked
        ? null
        : el('button', {
            type: 'button',
            class: 'btn btn-quiet btn-small add-statement',
            dataset: { section: section.name },
            text: `+ Add statement to ${section.name}`,
            onclick: () => addStatement(section.name),
          }),
    );
  }

  function renderStatement(s, locked) {
    const editing = !locked && state.editing.has(s.id);
    const clinician = s.origin === 'clinician';
    const evidence = (s.evidence || []).filter((id) => state.segments.has(id));
    const span = evidenceSpan(s);
    const item = el('li', {
      class: `statement state-${s.state}${state.selected === s.id ? ' selected' : ''}`,
      dataset: { statementId: s.id, state: s.state, origin: s.origin },
    });

    let body;
    if (editing) {
      const area = el('textarea', {
        class: 'stmt-editor',
        rows: 3,
        'aria-label': clinician ? 'New statement text' : 'Edit statement text',
        oninput: (e) => {
          state.editing.set(s.id, e.target.value);
          renderToolbar();
        },
        onkeydown: (e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            finishEdit(s.id);
          } else if (e.key === 'Escape') {
            e.preventDefault();
            cancelEdit(s.id);
          }
        },
      });
      area.value = state.editing.get(s.id);
      body = el(
        'div',
        { class: 'stmt-edit' },
        area,
        el(
          'div',
          { class: 'stmt-edit-actions' },
          el('span', { class: 'hint', text: 'Ctrl+Enter to finish · Esc to cancel' }),
          el('button', { type: 'button', class: 'btn btn-small edit-cancel', text: 'Cancel', onclick: () => cancelEdit(s.id) }),
          el('button', { type: 'button', class: 'btn btn-small btn-primary edit-done', text: 'Done', onclick: () => finishEdit(s.id) }),
        ),
      );
    } else {
      body = el(
        'button',
        {
          type: 'button',
          class: 'stmt-text',
          title: evidence.length ? 'Show the evidence in the transcript and play it' : 'Clinician text: no transcript evidence',
          'aria-pressed': state.selected === s.id ? 'true' : 'false',
          onclick: () => selectStatement(s.id),
        },
        s.text,
      );
    }

    const meta = el(
      'div',
      { class: 'stmt-meta' },
      el('span', { class: `origin origin-${s.origin}`, text: originName(s.origin) }),
      el('span', {
        class: `state-badge state-badge-${s.state}`,
        // At sign-off a statement nobody touched is attested as accepted.
        text: s.state === 'pending' && state.view.signed ? 'Accepted at sign-off' : STATE_NAMES[s.state] || s.state,
      }),
      evidence.length
        ? el(
            'span',
            { class: 'evidence-ref' },
            `Evidence ${evidence.join(', ')}`,
            span ? ` · ${clock(span.start)}–${clock(span.end)}` : '',
          )
        : null,
    );

    let actions = null;
    if (!locked && !editing) {
      const rejected = s.state === 'rejected';
      actions = el(
        'div',
        { class: 'stmt-actions', role: 'group', 'aria-label': 'Statement actions' },
        clinician
          ? null
          : el('button', {
              type: 'button',
              class: 'btn btn-small accept',
              'aria-pressed': s.state === 'accepted' ? 'true' : 'false',
              disabled: s.state === 'edited' ? true : null,
              title: s.state === 'edited' ? 'Your edited text is kept' : 'Accept this statement as drafted',
              text: s.state === 'accepted' ? 'Accepted ✓' : 'Accept',
              onclick: () => toggleAccept(s.id),
            }),
        el('button', { type: 'button', class: 'btn btn-small edit', text: 'Edit', disabled: rejected ? true : null, onclick: () => startEdit(s.id) }),
        el('button', {
          type: 'button',
          class: `btn btn-small reject${rejected ? ' restore' : ''}`,
          'aria-pressed': rejected ? 'true' : 'false',
          text: clinician ? 'Remove' : rejected ? 'Restore' : 'Reject',
          title: clinician ? 'Remove your statement' : rejected ? 'Put the statement back in the note' : 'Leave this statement out of the note',
          onclick: () => toggleReject(s.id),
        }),
      );
    }
    item.append(el('div', { class: 'stmt-main' }, body, meta));
    if (actions) item.append(actions);
    return item;
  }

  function renderProgress() {
    const counts = { pending: 0, accepted: 0, edited: 0, rejected: 0, added: 0 };
    for (const section of state.sections || []) for (const s of section.statements) counts[s.state] = (counts[s.state] || 0) + 1;
    const parts = [];
    if (counts.accepted) parts.push(`${counts.accepted} accepted`);
    if (counts.edited) parts.push(`${counts.edited} edited`);
    if (counts.rejected) parts.push(`${counts.rejected} rejected`);
    if (counts.added) parts.push(`${counts.added} added`);
    if (counts.pending) parts.push(`${counts.pending} not reviewed`);
    $('#progress').textContent = parts.join(' · ');
  }

  function renderToolbar() {
    const locked = readOnly();
    const dirty = isDirty();
    const save = $('#save');
    const sign = $('#sign');
    save.hidden = locked;
    sign.hidden = locked;
    save.disabled = locked || !dirty || state.busy;
    sign.disabled = locked || state.busy;
    $('#dirty').hidden = !dirty;
    if (dirty) $('#toast').hidden = true;
    $('#progress').hidden = !!(state.view && state.view.signed);
    $('#version-label').textContent = state.view ? `current: version ${state.view.version}` : '';
    renderProgress();
  }

  /** The working copy with open editors applied, as the API wants it. */
  function sectionsForSave() {
    return state.sections.map((section) => ({
      name: section.name,
      status: section.status,
      statements: section.statements.map((s) => ({
        id: s.id,
        text: state.editing.has(s.id) ? state.editing.get(s.id) : s.text,
        evidence: s.evidence || [],
        origin: s.origin,
        state: s.state,
      })),
    }));
  }

  function isDirty() {
    if (!state.sections || readOnly()) return false;
    for (const [id, text] of state.editing) {
      const found = findStatement(id);
      if (!found || text !== found.statement.text) return true;
    }
    return JSON.stringify(strip(state.sections)) !== JSON.stringify(strip(state.loaded));
  }

  const strip = (sections) =>
    sections.map((sec) => ({ n: sec.name, s: sec.statements.map((s) => [s.id, s.text, s.state]) }));

  // ---------------------------------------------------------------- statement actions

  function rerenderKeepingFocus(id, className) {
    renderNote();
    renderAlerts();
    renderToolbar();
    if (!id) return;
    const item = $(`#note [data-statement-id="${cssId(id)}"]`);
    if (!item) return;
    const target = (className && $(`.${className}:not([disabled])`, item)) || $('.stmt-editor', item) || $('.stmt-text', item);
    if (target) target.focus();
  }

  function toggleAccept(id) {
    const found = findStatement(id);
    if (!found) return;
    const s = found.statement;
    s.state = s.state === 'accepted' ? 'pending' : 'accepted';
    rerenderKeepingFocus(id, 'accept');
  }

  function toggleReject(id) {
    const found = findStatement(id);
    if (!found) return;
    const s = found.statement;
    if (s.origin === 'clinician') {
      found.section.statements.splice(found.index, 1);
      state.editing.delete(id);
      if (state.selected === id) state.selected = null;
      rerenderKeepingFocus(null);
      const button = $(`#note .add-statement[data-section="${cssId(found.section.name)}"]`);
      if (button) button.focus();
      return;
    }
    if (s.state === 'rejected') {
      const original = loadedStatement(id);
      const back = original && original.state !== 'rejected' ? original.state : 'pending';
      s.state = s.text !== (original ? original.text : s.text) ? 'edited' : back;
    } else {
      s.state = 'rejected';
    }
    rerenderKeepingFocus(id, 'reject');
  }

  function startEdit(id) {
    const found = findStatement(id);
    if (!found) return;
    state.editing.set(id, found.statement.text);
    rerenderKeepingFocus(id, null);
  }

  function cancelEdit(id) {
    const found = findStatement(id);
    state.editing.delete(id);
    if (found && found.statement.origin === 'clinician' && !found.statement.text.trim()) {
      found.section.statements.splice(found.index, 1);
      rerenderKeepingFocus(null);
      const button = $(`#note .add-statement[data-section="${cssId(found.section.name)}"]`);
      if (button) button.focus();
      return;
    }
    rerenderKeepingFocus(id, 'edit');
  }

  /** Applies an open editor to its statement; false (and a message) if it cannot. */
  function applyEdit(id) {
    const found = findStatement(id);
    if (!found) {
      state.editing.delete(id);
      return true;
    }
    const s = found.statement;
    const text = (state.editing.get(id) || '').replace(/\s+/g, ' ').trim();
    if (!text) {
      if (s.origin === 'clinician') {
        found.section.statements.splice(found.index, 1);
        state.editing.delete(id);
        return true;
      }
      showError('A statement cannot be empty. Use Reject to leave it out of the note.');
      return false;
    }
    state.editing.delete(id);
    if (s.origin === 'clinician') {
      s.text = text;
      s.state = 'added';
      return true;
    }
    const original = loadedStatement(id);
    if (text !== s.text) {
      s.text = text;
      s.state = 'edited';
    }
    if (original && text === original.text && s.state === 'edited' && original.state !== 'edited') {
      s.state = original.state === 'rejected' ? 'pending' : original.state;
    }
    return true;
  }

  function finishEdit(id) {
    if (!applyEdit(id)) return;
    clearError();
    rerenderKeepingFocus(id, 'edit');
  }

  function addStatement(sectionName) {
    if (readOnly()) return;
    const section = state.sections.find((s) => s.name === sectionName);
    if (!section) return;
    const id = `new-${uuid()}`;
    section.statements.push({ id, text: '', evidence: [], origin: 'clinician', state: 'added' });
    state.editing.set(id, '');
    rerenderKeepingFocus(id, null);
  }

  // ---------------------------------------------------------------- evidence and audio

  function evidenceSpan(statement) {
    let start = Infinity;
    let end = -Infinity;
    for (const id of statement.evidence || []) {
      const seg = state.segments.get(id);
      if (!seg) continue;
      start = Math.min(start, seg.start_ms);
      end = Math.max(end, seg.end_ms);
    }
    return Number.isFinite(start) && end > start ? { start, end } : null;
  }

  function selectStatement(id) {
    const found = findStatement(id);
    if (!found) return;
    state.selected = id;
    for (const item of $$('#note .statement')) {
      const on = item.dataset.statementId === id;
      item.classList.toggle('selected', on);
      const text = $('.stmt-text', item);
      if (text) text.setAttribute('aria-pressed', on ? 'true' : 'false');
    }
    for (const seg of $$('#transcript .evidence')) seg.classList.remove('evidence');
    const evidence = (found.statement.evidence || []).filter((e) => state.segments.has(e));
    let first = null;
    for (const segId of evidence) {
      const node = $(`#transcript [data-segment-id="${cssId(segId)}"]`);
      if (node) {
        node.classList.add('evidence');
        if (!first) first = node;
      }
    }
    if (first) first.scrollIntoView({ block: 'center', behavior: 'smooth' });
    const span = evidenceSpan(found.statement);
    if (span) {
      playSpan(span.start, span.end, `${clock(span.start)}–${clock(span.end)} · ${evidence.join(', ')}`);
    } else {
      const audio = $('#audio');
      audio.pause();
      audio.removeAttribute('src');
      audio.load();
      $('#audio-span').textContent = 'Your text has no transcript evidence';
    }
  }

  function playSpan(start, end, label) {
    if (!state.view || !state.view.audio) {
      $('#audio-span').textContent = 'No audio is kept for this encounter';
      return;
    }
    const audio = $('#audio');
    audio.src = `/api/encounters/${encodeURIComponent(state.view.id)}/audio?start_ms=${Math.floor(start)}&end_ms=${Math.ceil(end)}`;
    $('#audio-span').textContent = label;
    const playing = audio.play();
    if (playing && playing.catch) playing.catch(() => {}); // autoplay policies: the controls still work
  }

  /** Which segments the note cites, and which are the selected statement's evidence. */
  function transcriptMarks() {
    const cited = new Set();
    for (const section of state.sections) for (const s of section.statements) for (const e of s.evidence || []) cited.add(e);
    const selected = state.selected && findStatement(state.selected);
    return { cited, highlighted: new Set(selected ? selected.statement.evidence || [] : []) };
  }

  function renderTranscript() {
    const marks = transcriptMarks();
    const transcript = state.view.transcript || [];
    $('#transcript-count').textContent = plural(transcript.length, 'segment');
    $('#transcript').replaceChildren(...transcript.map((seg) => renderSegment(seg, marks)));
    if (!transcript.length) $('#transcript').append(el('li', { class: 'segment-empty', text: 'No transcript is kept for this encounter.' }));
  }

  /** Re-renders one segment in place (after its speaker changed), keeping the list's scroll. */
  function rerenderSegment(id) {
    const seg = state.segments.get(id);
    const node = $(`#transcript [data-segment-id="${cssId(id)}"]`);
    if (!seg || !node) return null;
    const fresh = renderSegment(seg, transcriptMarks());
    node.replaceWith(fresh);
    return fresh;
  }

  function renderSegment(seg, marks) {
    return el(
      'li',
      {
        class: `segment speaker-${seg.speaker || 'unknown'}${marks.cited.has(seg.id) ? ' cited' : ''}${marks.highlighted.has(seg.id) ? ' evidence' : ''}${seg.overlap ? ' overlap' : ''}`,
        dataset: { segmentId: seg.id, speaker: seg.speaker || 'unknown' },
      },
      el(
        'div',
        { class: 'seg-head' },
        el('button', {
          type: 'button',
          class: 'seg-time',
          title: 'Play this segment',
          'aria-label': `Play ${seg.id} from ${clock(seg.start_ms)}`,
          text: clock(seg.start_ms),
          onclick: () => playSpan(seg.start_ms, seg.end_ms, `${clock(seg.start_ms)}–${clock(seg.end_ms)} · ${seg.id}`),
        }),
        renderSpeaker(seg),
        seg.speaker_corrected
          ? el('span', {
              class: 'seg-corrected',
              title:
                seg.original_speaker && seg.original_speaker !== 'unknown'
                  ? `Speaker corrected at review; the recording labelled it ${speakerName(seg.original_speaker)}`
                  : 'Speaker corrected at review; the recording gave it no speaker',
              text: 'corrected',
            })
          : null,
        seg.overlap
          ? el(
              'span',
              { class: 'seg-overlap', title: 'Overlapping speech: another voice talks during this segment, so its words or speaker may be less certain' },
              el('span', { class: 'seg-overlap-icon', 'aria-hidden': 'true', text: '⇄' }),
              'Overlap',
              el('span', { class: 'visually-hidden', text: ' (overlapping speech: another voice talks during this segment)' }),
            )
          : null,
        el('span', { class: 'seg-id', text: seg.id }),
      ),
      el('p', { class: 'seg-text', text: seg.text }),
    );
  }

  /** Choices offered when correcting a speaker (the API takes other-1 to other-9). */
  const SPEAKER_CHOICES = ['clinician', 'patient', 'other-1', 'other-2', 'other-3'];

  /** The speaker label: read-only text, a button that opens the choices, or the choices. */
  function renderSpeaker(seg) {
    const known = seg.speaker && seg.speaker !== 'unknown';
    if (readOnly()) return known ? el('span', { class: 'seg-speaker', text: speakerName(seg.speaker) }) : null;
    if (state.speakerEditing === seg.id) {
      const choices = SPEAKER_CHOICES.includes(seg.speaker) || !known ? SPEAKER_CHOICES : [...SPEAKER_CHOICES, seg.speaker];
      const select = el(
        'select',
        {
          class: 'seg-speaker-select',
          'aria-label': `Who spoke ${seg.id}`,
          onchange: (e) => setSpeaker(seg.id, e.target.value),
          onkeydown: (e) => {
            if (e.key === 'Escape') {
              e.preventDefault();
              closeSpeakerChoice(seg.id, true);
            }
          },
          // Leaving the choices closes them, unless a choice is being saved (the change event
          // can come just after the blur).
          onblur: (e) => {
            const select = e.target;
            setTimeout(() => {
              if (state.speakerEditing === seg.id && !state.speakerSaving && document.activeElement !== select) closeSpeakerChoice(seg.id, false);
            }, 150);
          },
        },
        known ? null : el('option', { value: '', text: 'Choose…', disabled: true }),
        choices.map((value) => el('option', { value, text: speakerName(value) })),
      );
      select.value = known ? seg.speaker : '';
      return select;
    }
    return el('button', {
      type: 'button',
      class: `seg-speaker${known ? '' : ' seg-speaker-unset'}`,
      title: 'Change who spoke this segment',
      'aria-label': `${known ? speakerName(seg.speaker) : 'No speaker'}: change who spoke ${seg.id}`,
      text: known ? speakerName(seg.speaker) : 'Set speaker',
      onclick: () => openSpeakerChoice(seg.id),
    });
  }

  function openSpeakerChoice(id) {
    if (readOnly()) return;
    const previous = state.speakerEditing;
    state.speakerEditing = id;
    if (previous && previous !== id) rerenderSegment(previous);
    const node = rerenderSegment(id);
    const select = node && $('.seg-speaker-select', node);
    if (select) select.focus();
  }

  /** Closes the choices of segment `id`; `refocus` puts the focus back on its label. */
  function closeSpeakerChoice(id, refocus) {
    if (state.speakerEditing === id) state.speakerEditing = null;
    const node = rerenderSegment(id);
    const button = node && $('button.seg-speaker', node);
    if (button && refocus) button.focus();
  }

  /** Saves a corrected speaker (the note is not redrafted) and shows the stored label. */
  async function setSpeaker(id, speaker) {
    const seg = state.segments.get(id);
    if (!seg || readOnly() || state.speakerSaving || !speaker) return;
    if (speaker === seg.speaker) {
      closeSpeakerChoice(id, true);
      return;
    }
    clearError();
    state.speakerSaving = true;
    try {
      const answer = await api(
        'PUT',
        `/api/encounters/${encodeURIComponent(state.view.id)}/segments/${encodeURIComponent(id)}/speaker`,
        { speaker },
      );
      seg.speaker = answer.speaker;
      seg.speaker_corrected = answer.speaker_corrected;
      seg.original_speaker = answer.original_speaker;
      toast(`${id}: speaker set to ${speakerName(seg.speaker)}`);
    } catch (error) {
      fail(error, 'change the speaker');
    } finally {
      state.speakerSaving = false;
    }
    if (state.view) closeSpeakerChoice(id, true);
  }

  const speakerName = (s) => {
    const other = /^other-(\d+)$/.exec(s || '');
    if (other) return `Other ${other[1]}`;
    return { clinician: 'Clinician', patient: 'Patient', unknown: 'Speaker' }[s] || (s ? String(s) : 'Speaker');
  };

  // ---------------------------------------------------------------- versions and diffs

  async function loadVersions() {
    try {
      state.versions = (await api('GET', `/api/encounters/${encodeURIComponent(state.view.id)}/versions`)) || [];
    } catch (error) {
      fail(error, 'load the version list');
      return;
    }
    renderVersions();
  }

  /**
   * The version list with the AI draft first. Servers that number the draft as a version of its
   * own and list only saved versions get the draft added here, so the list always starts with it.
   */
  function versionEntries() {
    const listed = state.versions.map((v) => ({ ...v, draft: false }));
    if (!listed.length) {
      return [{ version: state.view.version, draft: true, created_at: state.view.created_at }];
    }
    const first = listed.reduce((a, b) => (b.version < a.version ? b : a));
    if (!first.author_id && !countOf(first.changes)) {
      first.draft = true;
    } else if (first.version > 0) {
      listed.push({ version: first.version - 1, draft: true, created_at: state.view.created_at });
    }
    return listed.sort((a, b) => a.version - b.version);
  }

  function renderVersions(shown) {
    const current = state.view.version;
    state.draftVersion = null;
    $('#versions').replaceChildren(
      ...versionEntries().map((v) => {
        if (v.draft) state.draftVersion = v.version;
        const changes = countOf(v.changes);
        const by = v.author_id && state.me && v.author_id === state.me.id ? 'you' : 'clinician';
        const at = when(v.created_at !== undefined ? v.created_at : v.created_at_ms);
        return el(
          'li',
          { dataset: { version: v.version }, class: v.version === current ? 'current' : '' },
          el(
            'button',
            {
              type: 'button',
              class: 'version-item',
              'aria-pressed': shown === v.version ? 'true' : 'false',
              onclick: () => showVersionDiff(v.version),
              title: v.draft ? 'The draft as generated' : 'Show what changed in this version',
            },
            el('span', { class: 'version-no', text: `v${v.version}` }),
            el('span', { class: 'version-when', text: [at, v.draft ? 'AI draft' : by].filter(Boolean).join(' · ') }),
            v.draft ? null : el('span', { class: 'version-changes', text: plural(changes, 'change') }),
          ),
        );
      }),
    );
    renderToolbar();
  }

  const KIND_NAMES = { accepted: 'Accepted', edited: 'Edited', rejected: 'Rejected', added: 'Added', removed: 'Removed', restored: 'Restored' };

  /** Shows a diff; `before`/`after` are section lists used to show the statements' texts. */
  function renderDiff(version, diff, before, after) {
    const index = (sections) => {
      const map = new Map();
      for (const section of sections || []) for (const s of section.statements || []) map.set(s.id, s);
      return map;
    };
    const old = index(before);
    const now = index(after);
    $('#diff-heading').textContent = `Changes in version ${version}: ${plural(diff.length, 'change')}`;
    $('#diff').replaceChildren(
      ...diff.map((change) => {
        const newer = now.get(change.statement);
        const older = old.get(change.statement);
        const text = (newer || older || {}).text || '';
        return el(
          'li',
          { class: `change change-${change.kind}`, dataset: { kind: change.kind, statement: change.statement } },
          el('span', { class: `kind kind-${change.kind}`, text: KIND_NAMES[change.kind] || change.kind }),
          el('span', { class: 'change-section', text: change.section || '' }),
          el(
            'span',
            { class: 'change-text' },
            change.kind === 'edited' && older && older.text !== text
              ? [el('del', { text: older.text }), ' ', el('ins', { text })]
              : change.kind === 'rejected' || change.kind === 'removed'
                ? el('del', { text })
                : text,
          ),
        );
      }),
    );
    if (!diff.length) $('#diff').append(el('li', { class: 'change-none', text: 'No changes.' }));
    $('#diff-box').hidden = false;
  }

  async function showVersionDiff(n) {
    const id = encodeURIComponent(state.view.id);
    try {
      if (n === state.draftVersion) {
        $('#diff-heading').textContent = `Version ${n} is the draft as generated.`;
        $('#diff').replaceChildren();
        $('#diff-box').hidden = false;
      } else {
        const version = await api('GET', `/api/encounters/${id}/versions/${n}`);
        const previous = n > 0 ? await api('GET', `/api/encounters/${id}/versions/${n - 1}`) : { sections: [] };
        renderDiff(n, version.diff || [], previous.sections, version.sections);
      }
      renderVersions(n);
    } catch (error) {
      fail(error, 'show that version');
    }
  }

  // ---------------------------------------------------------------- save and sign

  function commitEditors() {
    for (const id of Array.from(state.editing.keys())) if (!applyEdit(id)) return false;
    return true;
  }

  async function save() {
    if (readOnly() || state.busy) return false;
    if (!commitEditors()) {
      renderNote();
      return false;
    }
    if (!isDirty()) {
      renderNote();
      renderToolbar();
      return true;
    }
    clearError();
    const before = clone(state.loaded);
    const after = sectionsForSave();
    state.busy = true;
    renderToolbar();
    $('#save').textContent = 'Saving…';
    try {
      const answer = await api('POST', `/api/encounters/${encodeURIComponent(state.view.id)}/versions`, {
        base_version: state.view.version,
        sections: after,
      });
      await reloadView();
      renderDiff(answer.version, answer.diff || [], before, after);
      await loadVersions();
      renderVersions(answer.version);
      toast(`Saved version ${answer.version}`);
      return true;
    } catch (error) {
      fail(error, 'save the note');
      renderNote();
      return false;
    } finally {
      state.busy = false;
      $('#save').textContent = 'Save version';
      renderToolbar();
    }
  }

  async function sign() {
    if (readOnly() || state.busy) return;
    if (!commitEditors()) {
      renderNote();
      return;
    }
    renderNote();
    renderToolbar();
    const counts = { pending: 0, accepted: 0, edited: 0, rejected: 0, added: 0 };
    for (const section of state.sections) for (const s of section.statements) counts[s.state] = (counts[s.state] || 0) + 1;
    const empty = state.sections.filter((sec) => !sec.statements.some((s) => s.state !== 'rejected'));
    const dirty = isDirty();
    const body = [
      el('p', {
        text: `You attest that you reviewed this note and that it is accurate. The signed note is final: corrections are made as signed addenda.`,
      }),
      el(
        'ul',
        { class: 'confirm-counts' },
        el('li', {}, el('strong', { text: String(counts.accepted + counts.pending) }), ' AI statements kept as drafted'),
        el('li', {}, el('strong', { text: String(counts.edited) }), ' edited by you'),
        el('li', {}, el('strong', { text: String(counts.rejected) }), ' rejected (left out)'),
        el('li', {}, el('strong', { text: String(counts.added) }), ' added by you'),
      ),
      counts.pending
        ? el('p', { class: 'confirm-warn', text: `${plural(counts.pending, 'statement')} you have not reviewed will be signed as accepted.` })
        : null,
      empty.length ? el('p', { class: 'confirm-warn', text: `Empty: ${empty.map((s) => s.name).join(', ')}.` }) : null,
      dirty ? el('p', { class: 'confirm-note', text: `Your unsaved changes are saved as version ${state.view.version + 1} first.` }) : null,
    ];
    const ok = await confirmDialog({ title: 'Sign this note?', body, ok: `Sign as ${state.me.username}` });
    if (!ok) return;
    if (dirty && !(await save())) return;
    clearError();
    state.busy = true;
    renderToolbar();
    $('#sign').textContent = 'Signing…';
    try {
      const note = await api('POST', `/api/encounters/${encodeURIComponent(state.view.id)}/sign`, { version: state.view.version });
      state.signed = [note];
      await reloadView();
      await loadSigned();
      await loadEncountersQuietly();
      toast('Note signed');
      const heading = $('#attestation-heading');
      if (heading) heading.focus();
      $('#note-col').scrollTop = 0;
    } catch (error) {
      fail(error, 'sign the note');
    } finally {
      state.busy = false;
      $('#sign').textContent = 'Sign note…';
      renderToolbar();
    }
  }

  async function loadEncountersQuietly() {
    try {
      state.encounters = (await api('GET', '/api/encounters')) || [];
      renderEncounterList();
    } catch (_) {
      // The list refreshes on the next Refresh.
    }
  }

  // ---------------------------------------------------------------- attestation and addenda

  async function loadSigned() {
    try {
      state.signed = (await api('GET', `/api/encounters/${encodeURIComponent(state.view.id)}/signed`)) || [];
    } catch (error) {
      fail(error, 'load the signed note');
    }
    renderAttestation();
  }

  const short = (hex, n = 16) => (hex ? `${String(hex).slice(0, n)}…` : '—');

  function who(id) {
    if (state.me && id === state.me.id) return `${state.me.username} (${id})`;
    return id || '—';
  }

  function hashRow(label, id, value) {
    return [
      el('dt', { text: label }),
      // <wbr> lets a 64-digit hash break into two even halves; textContent stays the hash.
      el('dd', { id, class: 'hash', title: value || '' }, value ? el('code', {}, value.slice(0, 32), el('wbr'), value.slice(32)) : '—'),
    ];
  }

  // ---------------------------------------------------------------- delivery to the EHR
  // The server pushes the delivery state (server-sent events) whenever it changes and ends the
  // stream at a final state; closing it then keeps EventSource from reconnecting.
  let deliveryEvents = null;
  const DELIVERY_NAMES = {
    queued: 'Queued',
    sending: 'Sending',
    sent: 'Sent, confirming',
    confirmed: 'Confirmed in chart',
    dead: 'Failed: IT has been alerted',
    cancelled: 'Cancelled',
  };
  const FINAL = new Set(['confirmed', 'dead', 'cancelled']);

  function watchDelivery(encounterId) {
    if (deliveryEvents) deliveryEvents.close();
    const show = (items) => {
      const box = $('#delivery');
      if (!box) return;
      if (!items.length) {
        box.dataset.state = 'none';
        box.textContent = 'No EHR destination is configured on this box';
        return;
      }
      box.dataset.state = items.every((d) => d.state === 'confirmed') ? 'confirmed' : items.some((d) => d.state === 'dead') ? 'dead' : 'pending';
      box.replaceChildren(
        ...items.map((d) =>
          el('span', {
            class: `delivery delivery-${d.state}`,
            dataset: { state: d.state },
            text: `${d.signed_seq > 1 ? 'Addendum' : 'Note'} → ${d.destination}: ${DELIVERY_NAMES[d.state] || d.state}`,
          }),
        ),
      );
    };
    deliveryEvents = new EventSource(`/api/encounters/${encodeURIComponent(encounterId)}/delivery/events`);
    deliveryEvents.addEventListener('delivery', (event) => {
      let items = [];
      try {
        items = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      show(items);
      if (!items.length || items.every((d) => FINAL.has(d.state))) deliveryEvents.close();
    });
  }

  function renderAttestation() {
    const box = $('#attestation');
    const original = state.signed[0];
    if (!state.view.signed || !original) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const a = original.attestation || {};
    const ai = a.ai_statements || {};
    const counts = { accepted: countOf(ai.accepted), modified: countOf(ai.modified), rejected: countOf(ai.rejected) };
    const models = (a.models || []).map((m) =>
      el('li', {}, el('span', { text: m.name }), m.sha256 ? [' ', el('code', { title: m.sha256, text: short(m.sha256, 12) })] : null),
    );
    const addenda = state.signed.slice(1);
    const download = () => {
      const blob = new Blob([JSON.stringify(original, null, 2)], { type: 'application/json' });
      const link = el('a', { href: URL.createObjectURL(blob), download: `signed-note-${String(a.note_sha256 || 'note').slice(0, 12)}.json` });
      document.body.append(link);
      link.click();
      setTimeout(() => {
        URL.revokeObjectURL(link.href);
        link.remove();
      }, 0);
    };
    fill(
      box,
      el(
        'div',
        { class: 'card-head attestation-head' },
        el('span', { class: 'seal', 'aria-hidden': 'true', text: '✓' }),
        el('h3', { id: 'attestation-heading', tabindex: '-1', text: 'Signed and locked' }),
        el('span', { class: 'muted', text: 'Ed25519 signature · verify offline with edge-scribe verify' }),
      ),
      el(
        'dl',
        { class: 'attestation-grid' },
        el('dt', { text: 'Clinician' }),
        el('dd', { id: 'att-clinician', text: who(a.clinician_id) }),
        el('dt', { text: 'Signed at' }),
        el('dd', { id: 'att-time' }, el('time', { datetime: a.signed_at || '', text: when(a.signed_at, true) }), el('span', { class: 'muted', text: ` (${a.signed_at || ''})` })),
        ...hashRow('Note SHA-256', 'att-note-sha256', a.note_sha256),
        ...hashRow('Audio SHA-256', 'att-audio-sha256', a.audio_sha256),
        el('dt', { text: 'Models' }),
        el('dd', { id: 'att-models' }, models.length ? el('ul', { class: 'model-list' }, models) : '—'),
        el('dt', { text: 'Template' }),
        el('dd', { text: `${a.template_id || '—'} · prompt ${a.prompt_version || '—'}` }),
        el('dt', { text: 'AI statements' }),
        el(
          'dd',
          { id: 'att-counts', dataset: counts },
          el('span', { class: 'count count-accepted' }, el('strong', { text: String(counts.accepted) }), ' accepted'),
          el('span', { class: 'count count-modified' }, el('strong', { text: String(counts.modified) }), ' modified'),
          el('span', { class: 'count count-rejected' }, el('strong', { text: String(counts.rejected) }), ' rejected'),
        ),
        el('dt', { text: 'Chart' }),
        el('dd', { id: 'delivery', 'aria-live': 'polite', text: 'Checking…' }),
        el('dt', { text: 'Signing key' }),
        el('dd', { class: 'hash' }, el('code', { title: original.public_key_hex || '', text: short(original.public_key_hex, 24) })),
      ),
      el(
        'div',
        { class: 'attestation-actions' },
        state.me.role === 'clinician'
          ? el('button', { type: 'button', id: 'add-addendum', class: 'btn', text: 'Add addendum', onclick: openAddendum })
          : null,
        el('button', { type: 'button', class: 'btn btn-quiet', text: 'Download signed note (JSON)', onclick: download }),
      ),
      el('div', { id: 'addendum-form', class: 'addendum-form', hidden: true }),
      addenda.length
        ? el(
            'section',
            { id: 'addenda', class: 'addenda', 'aria-label': 'Addenda' },
            el('h4', { text: plural(addenda.length, 'addendum', 'addenda') }),
            el(
              'ol',
              {},
              addenda.map((n) =>
                el(
                  'li',
                  { class: 'addendum' },
                  el('p', { class: 'addendum-text', text: n.note_text }),
                  el('p', { class: 'muted' }, `Signed ${when(n.attestation && n.attestation.signed_at, true)} by ${who(n.attestation && n.attestation.clinician_id)} · SHA-256 `, el('code', { text: short(n.attestation && n.attestation.note_sha256) })),
                ),
              ),
            ),
          )
        : null,
    );
    box.hidden = false;
    watchDelivery(state.view.id);
  }

  function openAddendum() {
    const form = $('#addendum-form');
    const area = el('textarea', { id: 'addendum-text', rows: 4, 'aria-label': 'Addendum text', placeholder: 'Correction or additional information' });
    form.replaceChildren(
      el('label', { for: 'addendum-text', text: 'Addendum (signed on submit; the original note is not changed)' }),
      area,
      el(
        'div',
        { class: 'stmt-edit-actions' },
        el('button', { type: 'button', class: 'btn btn-small', text: 'Cancel', onclick: () => { form.hidden = true; form.replaceChildren(); $('#add-addendum').focus(); } }),
        el('button', { type: 'button', id: 'addendum-submit', class: 'btn btn-small btn-primary', text: 'Sign addendum', onclick: submitAddendum }),
      ),
    );
    form.hidden = false;
    area.focus();
  }

  async function submitAddendum() {
    const text = ($('#addendum-text').value || '').trim();
    if (!text) {
      showError('The addendum is empty.');
      return;
    }
    clearError();
    try {
      await api('POST', `/api/encounters/${encodeURIComponent(state.view.id)}/addenda`, { text });
      await loadSigned();
      toast('Addendum signed');
    } catch (error) {
      fail(error, 'sign the addendum');
    }
  }

  // ---------------------------------------------------------------- the confirm dialog

  /** An in-page confirmation (not window.confirm): resolves true on OK, false on Cancel/Esc. */
  function confirmDialog({ title, body, ok, danger }) {
    const dialog = $('#confirm-dialog');
    $('#confirm-title').textContent = title;
    $('#confirm-body').replaceChildren(...body.filter(Boolean));
    const okButton = $('#confirm-ok');
    okButton.textContent = ok;
    okButton.classList.toggle('btn-danger', !!danger);
    okButton.classList.toggle('btn-primary', !danger);
    return new Promise((resolve) => {
      const finish = (answer) => {
        okButton.removeEventListener('click', onOk);
        $('#confirm-cancel').removeEventListener('click', onCancel);
        dialog.removeEventListener('cancel', onCancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const onOk = () => finish(true);
      const onCancel = (e) => {
        if (e) e.preventDefault();
        finish(false);
      };
      okButton.addEventListener('click', onOk);
      $('#confirm-cancel').addEventListener('click', onCancel);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      $('#confirm-cancel').focus();
    });
  }

  // ---------------------------------------------------------------- badge pairing

  async function onPairBadge(event) {
    event.preventDefault();
    const input = $('#pair-code');
    const result = $('#pair-result');
    const code = input.value.replace(/\D/g, '');
    if (!code) {
      result.textContent = 'Enter the digits of the code.';
      return;
    }
    try {
      const paired = await api('POST', '/api/badges/confirm', { code });
      result.textContent = `Badge ${paired.badge_id} is now paired to you.`;
      input.value = '';
    } catch (e) {
      result.textContent = e.message || 'Pairing failed.';
    }
  }

  // ---------------------------------------------------------------- start

  function init() {
    $('#login-form').addEventListener('submit', onLogin);
    $('#logout').addEventListener('click', onLogout);
    $('#pair-form').addEventListener('submit', onPairBadge);
    $('#refresh').addEventListener('click', () => {
      clearError();
      loadEncounters();
    });
    $('#save').addEventListener('click', save);
    $('#sign').addEventListener('click', sign);
    document.addEventListener('keydown', (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 's' && state.view && !readOnly()) {
        e.preventDefault();
        save();
      }
    });
    window.addEventListener('beforeunload', (e) => {
      if (isDirty()) {
        e.preventDefault();
        e.returnValue = '';
      }
    });
    api('GET', '/api/me')
      .then((me) => enterApp(me))
      .catch((error) => {
        showLogin();
        if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) showError(explain(error, 'reach the scribe box'));
      });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
