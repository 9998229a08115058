// medchain web UI. No framework, no inline code: every piece of data goes in with textContent.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { me: null, timers: [], countdowns: new Map(), blocksBefore: [], blocksNext: null, nextCutAt: null };

  // ---------- helpers ----------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k === 'text') node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function setText(id, v) { $(id).textContent = v === undefined || v === null ? '–' : String(v); }
  function show(id, on) { $(id).hidden = !on; }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtTime(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  function fmtLeft(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const m = Math.floor(s / 60);
    return m > 0 ? `${m} min ${String(s % 60).padStart(2, '0')} s` : `${s} s`;
  }
  function short(hex, n = 12) { return hex ? `${hex.slice(0, n)}…` : '–'; }
  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.classList.toggle('bad', !!bad);
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }
  function result(id, msg, bad) {
    const r = $(id);
    r.textContent = msg;
    r.classList.toggle('bad', !!bad);
    r.hidden = false;
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      return { ok: false, status: 0, data: { success: false, message: 'The server cannot be reached' } };
    }
    let data;
    try { data = await res.json(); } catch (e) { data = { success: false, message: `Unexpected answer (${res.status})` }; }
    if (res.status === 401 && state.me && path !== '/api/login') {
      stopTimers();
      state.me = null;
      render();
      toast('Your session ended; please sign in again', true);
    }
    return { ok: res.ok && data.success !== false, status: res.status, data };
  }

  // A countdown shown in element `id` until `deadline` (ms, local clock).
  function countdown(id, deadline, onEnd) {
    state.countdowns.set(id, { deadline, onEnd });
    tickCountdowns();
  }
  function tickCountdowns() {
    const now = Date.now();
    for (const [id, c] of state.countdowns) {
      const node = document.getElementById(id) || document.querySelector(`[data-countdown="${id}"]`);
      if (!node) { state.countdowns.delete(id); continue; }
      const left = c.deadline - now;
      node.textContent = left > 0 ? fmtLeft(left) : 'expired';
      if (left <= 0) { state.countdowns.delete(id); if (c.onEnd) c.onEnd(); }
    }
  }
  function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }
  function stopTimers() {
    state.timers.forEach(clearInterval);
    state.timers = [];
    state.countdowns.clear();
  }

  // ---------- views ----------
  function render() {
    const me = state.me;
    show('login-view', !me);
    show('doctor-view', !!me && me.userType === 'doctor');
    show('patient-view', !!me && me.userType === 'patient');
    show('who', !!me);
    if (!me) { $('login-id').focus(); return; }
    setText('who-role', me.userType);
    setText('who-id', me.id);
    $('who-dept').textContent = me.department || '';
    stopTimers();
    every(1000, tickCountdowns);
    if (me.userType === 'doctor') startDoctor(); else startPatient();
  }

  // ---------- login ----------
  function roleSelected() { return $('role-doctor').checked ? 'doctor' : 'patient'; }
  function onRoleChange() { $('login-id-label').textContent = roleSelected() === 'doctor' ? 'Doctor ID' : 'Patient ID'; }
  async function onLogin(ev) {
    ev.preventDefault();
    const role = roleSelected();
    const id = $('login-id').value.trim();
    const password = $('login-password').value;
    $('login-error').hidden = true;
    if (!id || !password) { $('login-error').textContent = 'Enter your ID and password'; $('login-error').hidden = false; return; }
    const body = { role, password };
    body[role === 'doctor' ? 'doctorId' : 'patientId'] = id;
    $('login-submit').disabled = true;
    const r = await api('POST', '/api/login', body);
    $('login-submit').disabled = false;
    $('login-password').value = '';
    if (!r.ok) { $('login-error').textContent = r.data.message || 'Sign-in failed'; $('login-error').hidden = false; return; }
    state.me = { userType: r.data.userType, id: r.data.patientId || r.data.doctorId, department: r.data.department };
    render();
  }
  async function onLogout() {
    await api('POST', '/api/logout');
    stopTimers();
    state.me = null;
    clearSensitive();
    render();
  }
  function clearSensitive() {
    for (const id of ['vr-records', 'history-list', 'access-body', 'pending-list', 'rc-list', 'blocks-body']) clear($(id));
    for (const id of ['ip-result', 'approved', 'ar-result', 'cut-result']) $(id).hidden = true;
    document.querySelectorAll('input:not([type=radio]), textarea').forEach((i) => { i.value = ''; });
  }

  // ---------- doctor ----------
  function startDoctor() {
    $('ar-department').value = state.me.department || '';
    refreshRemoteRequests();
    refreshStatus();
    refreshBlocks();
    every(3000, refreshRemoteRequests);
    every(3000, refreshStatus);
    every(6000, () => { if (state.blocksBefore.length === 0) refreshBlocks(); });
  }
  function selectTab(remote) {
    $('tab-inperson').classList.toggle('active', !remote);
    $('tab-remote').classList.toggle('active', remote);
    $('tab-inperson').setAttribute('aria-selected', String(!remote));
    $('tab-remote').setAttribute('aria-selected', String(remote));
    show('inperson-form', !remote);
    show('remote-form', remote);
  }
  async function onInPerson(ev) {
    ev.preventDefault();
    const body = { patientId: $('ip-patient').value.trim(), password: $('ip-password').value };
    const purpose = $('ip-purpose').value.trim();
    if (purpose) body.purpose = purpose;
    $('ip-password').value = '';
    const r = await api('POST', '/api/request_consent', body);
    if (!r.ok) { $('ip-result').hidden = true; toast(r.data.message || 'Consent failed', true); return; }
    $('ip-code').textContent = r.data.otp;
    $('ip-result').hidden = false;
    countdown('ip-expiry', Date.now() + r.data.expiry * 1000, () => { $('ip-code').textContent = '------'; });
    $('ar-patient').value = body.patientId;
    $('vr-patient').value = body.patientId;
  }
  async function onRemote(ev) {
    ev.preventDefault();
    const body = { patientId: $('rc-patient').value.trim(), purpose: $('rc-purpose').value.trim() };
    const r = await api('POST', '/api/consents/request', body);
    if (!r.ok) { toast(r.data.message || 'Request failed', true); return; }
    toast(`Request sent to ${body.patientId}`);
    $('rc-purpose').value = '';
    $('ar-patient').value = body.patientId;
    $('vr-patient').value = body.patientId;
    refreshRemoteRequests();
  }
  async function refreshRemoteRequests() {
    const r = await api('GET', '/api/consents');
    if (!r.ok) return;
    const list = $('rc-list');
    clear(list);
    const now = Date.now();
    for (const c of (r.data.consents || []).filter((c) => c.channel === 'remote').slice(0, 8)) {
      const left = el('span', { class: 'muted', 'data-countdown': `rc-${c.id}` });
      const item = el('li', { class: 'item', 'data-test': 'rc-item', 'data-state': c.state },
        el('div', { class: 'item-head' },
          el('strong', { text: c.patient_id }),
          el('span', { class: `badge ${c.state}`, 'data-test': 'rc-state', text: c.state.replace('_', ' ') })),
        el('span', { text: c.purpose }),
        el('span', { class: 'muted' }, fmtTime(c.requested_ms), c.time_left_ms > 0 ? ' · ' : '', c.time_left_ms > 0 ? left : ''));
      list.append(item);
      if (c.time_left_ms > 0) countdown(`rc-${c.id}`, now + c.time_left_ms);
    }
  }
  async function onAddRecord(ev) {
    ev.preventDefault();
    const body = {
      patientId: $('ar-patient').value.trim(),
      doctorId: state.me.id,
      otp: $('ar-otp').value.trim(),
      medical_data: { diagnosis: $('ar-diagnosis').value, prescription: $('ar-prescription').value, notes: $('ar-notes').value },
    };
    const dept = $('ar-department').value.trim();
    if (dept) body.department = dept;
    $('ar-submit').disabled = true;
    const r = await api('POST', '/api/add_record', body);
    $('ar-submit').disabled = false;
    if (!r.ok) { result('ar-result', r.data.message || 'Failed', true); return; }
    result('ar-result', r.data.message + (r.data.txId ? ` (transaction ${short(r.data.txId)})` : ''));
    for (const id of ['ar-otp', 'ar-diagnosis', 'ar-prescription', 'ar-notes']) $(id).value = '';
  }
  async function onReadRecords(ev) {
    ev.preventDefault();
    const body = { patientId: $('vr-patient').value.trim(), otp: $('vr-otp').value.trim() };
    $('vr-otp').value = '';
    const r = await api('POST', '/api/doctor/patient_records', body);
    const list = $('vr-records');
    clear(list);
    if (!r.ok) { toast(r.data.message || 'Failed', true); return; }
    renderRecords(list, r.data.records || []);
    if (!(r.data.records || []).length) list.append(el('li', { class: 'muted', text: 'No committed records.' }));
  }
  async function onCut() {
    $('cut-block').disabled = true;
    const r = await api('POST', '/api/validate');
    $('cut-block').disabled = false;
    result('cut-result', r.data.message || 'Failed', !r.ok);
    refreshBlocks();
    refreshStatus();
  }
  async function refreshStatus() {
    const r = await api('GET', '/api/status');
    if (!r.ok) return;
    const s = r.data;
    const m = s.metrics || {};
    setText('st-tps', m.tps !== undefined ? `${Number(m.tps).toFixed(1)} tx/s` : '–');
    setText('st-latency', m.latency_ms !== undefined ? `${Math.round(m.latency_ms)} ms` : '–');
    setText('st-success', m.success_rate !== undefined ? `${Number(m.success_rate).toFixed(1)} %` : '–');
    setText('st-txcount', m.tx_count);
    setText('st-height', s.height);
    setText('st-chain', s.pending !== undefined ? `${s.pending} pending` : '–');
    const list = $('st-validators');
    clear(list);
    for (const v of s.validators || []) {
      list.append(el('li', { class: 'validator', 'data-test': 'validator' },
        el('strong', { text: v.name }),
        el('span', {},
          v.primary ? el('span', { class: 'badge', 'data-test': 'primary', text: 'primary' }) : '',
          ' ',
          el('span', { class: `badge ${v.state}`, text: v.state })),
        el('span', { class: 'muted', text: `height ${v.height} · view ${v.view}` })));
    }
    if (typeof s.next_cut_in_ms === 'number' && s.next_cut_in_ms > 0) {
      countdown('next-cut', Date.now() + s.next_cut_in_ms, () => { $('next-cut').textContent = 'any moment'; });
    } else if (typeof s.next_cut_in_ms === 'number') {
      state.countdowns.delete('next-cut');
      $('next-cut').textContent = 'any moment';
    } else {
      state.countdowns.delete('next-cut');
      $('next-cut').textContent = 'when a transaction is pending';
    }
  }
  async function refreshBlocks() {
    const before = state.blocksBefore.length ? state.blocksBefore[state.blocksBefore.length - 1] : null;
    const r = await api('GET', `/api/blocks?limit=10${before !== null ? `&before=${before}` : ''}`);
    if (!r.ok) return;
    const body = $('blocks-body');
    clear(body);
    for (const b of r.data.blocks || []) {
      body.append(el('tr', { 'data-test': 'block-row' },
        el('td', { text: b.height }),
        el('td', {}, el('code', { title: b.hash, text: short(b.hash, 10) })),
        el('td', { text: fmtTime(b.timestamp_ms) }),
        el('td', { text: b.proposer }),
        el('td', { text: b.tx_count }),
        el('td', { text: (b.signers || []).length })));
    }
    state.blocksNext = r.data.next_before;
    $('blocks-older').disabled = r.data.next_before === null || r.data.next_before === undefined;
    $('blocks-newer').disabled = state.blocksBefore.length === 0;
  }

  // ---------- patient ----------
  function startPatient() {
    refreshPatient();
    every(4000, refreshPending);
  }
  async function refreshPatient() {
    await Promise.all([refreshPending(), refreshHistory(), refreshAccessLog()]);
  }
  async function refreshPending() {
    const r = await api('GET', '/api/consents/pending');
    if (!r.ok) return;
    const list = $('pending-list');
    clear(list);
    const now = Date.now();
    const reqs = r.data.requests || [];
    show('pending-empty', reqs.length === 0);
    for (const c of reqs) {
      const approve = el('button', { class: 'btn ok', type: 'button', 'data-test': 'approve' }, 'Approve');
      const deny = el('button', { class: 'btn danger', type: 'button', 'data-test': 'deny' }, 'Deny');
      approve.addEventListener('click', () => answer(c, true));
      deny.addEventListener('click', () => answer(c, false));
      list.append(el('li', { class: 'item', 'data-test': 'pending-request', 'data-id': c.id },
        el('div', { class: 'item-head' },
          el('strong', {}, 'Dr ', el('span', { 'data-test': 'pending-doctor', text: c.doctor_id })),
          el('span', { class: 'badge', 'data-test': 'pending-department', text: c.department })),
        el('span', { 'data-test': 'pending-purpose', text: c.purpose }),
        el('span', { class: 'muted' }, 'answer within ', el('span', { 'data-countdown': `pr-${c.id}` })),
        el('div', { class: 'item-actions' }, approve, deny)));
      countdown(`pr-${c.id}`, now + c.time_left_ms);
    }
  }
  async function answer(c, approve) {
    const r = await api('POST', `/api/consents/${encodeURIComponent(c.id)}/${approve ? 'approve' : 'deny'}`);
    if (!r.ok) { toast(r.data.message || 'Failed', true); refreshPending(); return; }
    if (approve) {
      $('approved-doctor').textContent = `Dr ${c.doctor_id}`;
      $('approved-code').textContent = r.data.otp;
      $('approved').hidden = false;
      countdown('approved-expiry', Date.now() + r.data.expiry * 1000, () => { $('approved').hidden = true; });
    } else {
      toast(`Request from Dr ${c.doctor_id} denied`);
    }
    refreshPending();
  }
  async function refreshHistory() {
    const r = await api('POST', '/api/patient_records', {});
    if (!r.ok) return;
    const list = $('history-list');
    clear(list);
    const records = r.data.records || [];
    show('history-empty', records.length === 0);
    renderRecords(list, records.slice().reverse());
  }
  function renderRecords(list, records) {
    const tpl = $('t-record');
    for (const rec of records) {
      const li = tpl.content.firstElementChild.cloneNode(true);
      const put = (cls, v) => { li.querySelector(cls).textContent = v === undefined || v === null || v === '' ? '–' : String(v); };
      put('.r-diagnosis', rec.diagnosis);
      put('.r-department', rec.department);
      put('.r-prescription', rec.prescription);
      put('.r-notes', rec.notes);
      if (!rec.notes) li.querySelector('.r-notes-line').hidden = true;
      put('.r-doctor', `Dr ${rec.doctor_id}`);
      put('.r-time', fmtTime(rec.timestamp_ms));
      put('.r-height', rec.height);
      put('.r-consent', short(rec.consent_hash, 16));
      li.querySelector('.r-consent').title = rec.consent_hash || '';
      list.append(li);
    }
  }
  async function refreshAccessLog() {
    const r = await api('GET', '/api/access_log');
    if (!r.ok) return;
    const body = $('access-body');
    clear(body);
    const entries = r.data.entries || [];
    show('access-empty', entries.length === 0);
    for (const a of entries) {
      body.append(el('tr', { 'data-test': 'access-row' },
        el('td', { text: fmtTime(a.timestamp_ms) }),
        el('td', { 'data-test': 'access-reader', text: a.reader_id }),
        el('td', { text: a.reader_role }),
        el('td', {}, a.consent_hash ? el('code', { title: a.consent_hash, text: short(a.consent_hash, 10) }) : el('span', { class: 'muted', text: 'own read' })),
        el('td', { text: a.height })));
    }
  }

  // ---------- start ----------
  function wire() {
    $('login-form').addEventListener('submit', onLogin);
    $('role-patient').addEventListener('change', onRoleChange);
    $('role-doctor').addEventListener('change', onRoleChange);
    $('logout').addEventListener('click', onLogout);
    $('tab-inperson').addEventListener('click', () => selectTab(false));
    $('tab-remote').addEventListener('click', () => selectTab(true));
    $('inperson-form').addEventListener('submit', onInPerson);
    $('remote-form').addEventListener('submit', onRemote);
    $('record-form').addEventListener('submit', onAddRecord);
    $('read-form').addEventListener('submit', onReadRecords);
    $('cut-block').addEventListener('click', onCut);
    $('blocks-older').addEventListener('click', () => {
      if (state.blocksNext === null || state.blocksNext === undefined) return;
      state.blocksBefore.push(state.blocksNext);
      refreshBlocks();
    });
    $('blocks-newer').addEventListener('click', () => { state.blocksBefore.pop(); refreshBlocks(); });
    $('refresh').addEventListener('click', async () => { await refreshPatient(); toast('Up to date'); });
  }

  async function start() {
    wire();
    onRoleChange();
    const r = await api('GET', '/api/me');
    state.me = r.ok ? { userType: r.data.userType, id: r.data.id, department: r.data.department } : null;
    render();
  }
  document.addEventListener('DOMContentLoaded', start);
})();
