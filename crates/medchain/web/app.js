// medchain web UI. No framework, no inline code: every piece of data goes in with textContent.
//
// Device keys (docs/SECURITY.md, issue 9, §5.0 and §5.8): on first sign-in the page makes an
// Ed25519 key with WebCrypto (non-extractable, kept in this origin's IndexedDB for one person on
// one chain), proves possession and adds it to the person's identity. When the node asks for
// the device's signature, the page decodes the bytes itself and checks them against what the
// user clicked (tag, chain, signer, kind, metadata, validity, body); if it cannot, it refuses.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null, timers: [], countdowns: new Map(), blocksBefore: [], blocksNext: null,
    genesis: null, device: { status: 'none' }, deviceSetup: null, identity: null,
    codeGrants: new Map(), doctorGrants: [], sentRequests: [], validators: null,
    history: [], erasures: [],
  };

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
  function fmtDuration(ms) {
    const h = ms / 3600000;
    if (h >= 48) return `${Math.round(h / 24)} days`;
    if (h >= 1) return `${Math.round(h * 10) / 10} h`;
    return `${Math.round(ms / 60000)} min`;
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
  const isPersonHex = (s) => /^[0-9a-f]{32}$/.test(s);

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

  // ---------- bytes: what the chain signs (docs/SECURITY.md §1, ledger's tx_v2 vectors) ----------
  const utf8 = new TextEncoder();
  const TX_TAG = utf8.encode('medchain/tx/v2');
  const POP_TAG = utf8.encode('medchain/key-pop/v2');
  const ASK_CODE_TAG = utf8.encode('medchain/ask-code/v1');
  const KINDS = ['enroll', 'ask', 'link', 'add_key', 'revoke_key', 'recover', 'request_grant', 'grant', 'revoke', 'add_record', 'access',
    'request_erasure', 'answer_erasure'];
  const HOUR_MS = 3600000n;
  // How far this browser's clock may be behind the node's when judging `not_after_ms`.
  const CLOCK_SLACK_MS = 120000n;

  function toHex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''); }
  function fromHex(hex, len) {
    if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(hex)) throw new Error('not hex');
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    if (len !== undefined && out.length !== len) throw new Error(`expected ${len} bytes`);
    return out;
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  function sameBytes(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
  async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)); }

  // Borsh, strictly: little-endian integers, u32-counted strings and vectors, 0/1 options, a
  // u8 variant index for enums; no byte left over.
  class Reader {
    constructor(bytes) { this.b = bytes; this.i = 0; }
    take(n) {
      if (this.i + n > this.b.length) throw new Error('the bytes end too early');
      const s = this.b.subarray(this.i, this.i + n);
      this.i += n;
      return s;
    }
    u8() { return this.take(1)[0]; }
    u32() { const s = this.take(4); return (s[0] | (s[1] << 8) | (s[2] << 16)) + s[3] * 0x1000000; }
    u64() { const lo = BigInt(this.u32()); return (BigInt(this.u32()) << 32n) | lo; }
    hex(n) { return toHex(this.take(n)); }
    string() { return new TextDecoder('utf-8', { fatal: true }).decode(this.take(this.u32())); }
    option(read) {
      const t = this.u8();
      if (t === 0) return null;
      if (t === 1) return read();
      throw new Error(`bad option byte ${t}`);
    }
    variant(names) {
      const t = this.u8();
      if (t >= names.length) throw new Error(`unknown variant ${t}`);
      return names[t];
    }
    vec(read) {
      const n = this.u32();
      if (n > 64) throw new Error('too many items');
      const out = [];
      for (let i = 0; i < n; i += 1) out.push(read());
      return out;
    }
    end() { if (this.i !== this.b.length) throw new Error('bytes left over'); }
  }
  const KEY_KINDS = ['device', 'custodial'];
  const REFUSALS = ['retention_period', 'ongoing_care', 'legal_claims', 'public_health'];
  const newKey = (r) => ({ key: r.hex(32), kind: r.variant(KEY_KINDS), origin: r.u32(), label: r.string(), pop: r.hex(64) });
  const scope = (r) => (r.variant(['write', 'read']) === 'write' ? 'write' : { read: { duration_ms: r.u64() } });
  const txId = (r) => r.hex(32);
  // Each kind's metadata, in the field order of `ledger::tx` (object literals evaluate in order).
  const META = {
    enroll: (r) => ({
      person: r.hex(16), nonce: r.hex(16), role: r.variant(['patient', 'doctor']),
      department: r.option(() => r.string()), name: r.option(() => r.string()), home: r.u32(),
      keys: r.vec(() => newKey(r)),
    }),
    ask: (r) => ({ person: r.hex(16), what: r.variant(['link', 'key']) === 'link' ? 'link' : { key: newKey(r) } }),
    link: (r) => ({ person: r.hex(16), validator: r.u32(), ask: r.option(() => txId(r)) }),
    add_key: (r) => ({ person: r.hex(16), key: newKey(r), ask: r.option(() => txId(r)) }),
    revoke_key: (r) => ({ person: r.hex(16), key: r.hex(32) }),
    recover: (r) => ({ person: r.hex(16), key: newKey(r) }),
    request_grant: (r) => ({ patient: r.hex(16), doctor: r.hex(16), scope: scope(r) }),
    grant: (r) => ({
      patient: r.hex(16), doctor: r.hex(16), scope: scope(r), request: r.option(() => txId(r)),
      attested: r.variant(['device', 'in_person']),
    }),
    revoke: (r) => ({ patient: r.hex(16), target: txId(r) }),
    add_record: (r) => ({ patient: r.hex(16), doctor: r.hex(16), department: r.string(), grant: txId(r) }),
    access: (r) => ({ patient: r.hex(16), reader: r.hex(16), serving: r.u32(), grant: r.option(() => txId(r)) }),
    request_erasure: (r) => ({ patient: r.hex(16), tx: txId(r) }),
    answer_erasure: (r) => ({
      request: txId(r),
      decision: r.variant(['erase', 'refuse']) === 'erase' ? 'erase' : {
        refuse: { reason: r.variant(REFUSALS), until_ms: r.option(() => r.u64()) },
      },
    }),
  };
  function readHeader(r) {
    const kind = KINDS[r.u8()];
    if (!kind) throw new Error('unknown kind');
    const meta = META[kind](r);
    const signerKind = r.variant(['device', 'custodial', 'validator']);
    const signer = signerKind === 'validator'
      ? { kind: signerKind, index: r.u32() }
      : { kind: signerKind, person: r.hex(16), key: r.hex(32) };
    return { meta: { kind, meta }, signer, created_ms: r.u64(), not_after_ms: r.u64(), nonce: r.hex(16), body_hash: r.hex(32) };
  }
  // `"medchain/tx/v2" || genesis_hash || borsh(header)` → { genesis, header }.
  function decodeSigningBytes(bytes) {
    if (bytes.length < TX_TAG.length + 32 || !sameBytes(bytes.subarray(0, TX_TAG.length), TX_TAG)) {
      throw new Error('the bytes do not start with medchain/tx/v2');
    }
    const r = new Reader(bytes.subarray(TX_TAG.length + 32));
    const header = readHeader(r);
    r.end();
    return { genesis: toHex(bytes.subarray(TX_TAG.length, TX_TAG.length + 32)), header };
  }
  // The content of a kind: a sealed kind's plaintext (the page never holds one: the node
  // sends `plain` as JSON; this reads the ledger's vectors), any other kind's empty body.
  function decodeBody(kind, bytes) {
    const r = new Reader(bytes);
    let body = {};
    if (kind === 'add_record') body = { diagnosis: r.string(), prescription: r.string(), notes: r.string() };
    else if (kind === 'grant' || kind === 'request_grant') body = { purpose: r.string() };
    r.end();
    return body;
  }
  // `"medchain/key-pop/v2" || genesis_hash || person || key || kind (u8) || origin (u32 LE)`: a
  // key made at this page is a device key of this page's validator (its origin).
  function popBytes(genesis, person, key, kind, origin) {
    const kindByte = KEY_KINDS.indexOf(kind);
    if (kindByte < 0) throw new Error('unknown key kind');
    if (!Number.isInteger(origin) || origin < 0 || origin > 0xffffffff) throw new Error('no validator index');
    const originBytes = new Uint8Array(4);
    new DataView(originBytes.buffer).setUint32(0, origin, true);
    return concat(POP_TAG, fromHex(genesis, 32), fromHex(person, 16), fromHex(key, 32), Uint8Array.of(kindByte), originBytes);
  }
  // The six digits of an ask (§5.7), computed here from its id rather than taken from the node.
  async function askCode(idHex) {
    const d = await sha256(concat(ASK_CODE_TAG, fromHex(idHex, 32)));
    const n = (d[0] | (d[1] << 8) | (d[2] << 16)) + d[3] * 0x1000000;
    return String(n % 1000000).padStart(6, '0');
  }
  // Numbers as decimal text (u64 values exceed a double): how tests compare with the vectors.
  function plain(v) {
    if (typeof v === 'bigint' || typeof v === 'number') return String(v);
    if (Array.isArray(v)) return v.map(plain);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    return v;
  }
  // The decoder, for the tests that hold it to ledger's vectors.
  window.medchainTx = Object.freeze({
    decode: (hex) => { const d = decodeSigningBytes(fromHex(hex)); return plain({ genesis: d.genesis, header: d.header }); },
    body: (kind, hex) => decodeBody(kind, fromHex(hex)),
    popBytes: (genesis, person, key, kind, origin) => toHex(popBytes(genesis, person, key, kind, origin)),
    askCode,
  });

  // ---------- device keys: one per (origin, chain, person), in IndexedDB ----------
  const KEY_DB = 'medchain-device-keys';
  function keyStore(mode, op) {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open(KEY_DB, 1);
      open.onupgradeneeded = () => open.result.createObjectStore('keys', { keyPath: 'id' });
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        const tx = db.transaction('keys', mode);
        const req = op(tx.objectStore('keys'));
        tx.oncomplete = () => { db.close(); resolve(req.result); };
        tx.onerror = () => { db.close(); reject(tx.error); };
        tx.onabort = () => { db.close(); reject(tx.error); };
      };
    });
  }
  const keys = {
    get: (id) => keyStore('readonly', (s) => s.get(id)),
    put: (rec) => keyStore('readwrite', (s) => s.put(rec)),
    del: (id) => keyStore('readwrite', (s) => s.delete(id)),
  };

  // The chain's identity, pinned in each key made for it: the hash of block 0.
  async function genesisHash() {
    if (state.genesis) return state.genesis;
    const r = await api('GET', '/api/blocks?before=1&limit=1');
    const b = r.ok && (r.data.blocks || [])[0];
    if (!b || b.height !== 0 || !/^[0-9a-f]{64}$/.test(b.hash)) throw new Error('This hospital did not show its genesis block');
    state.genesis = b.hash;
    return b.hash;
  }

  function liveDevice() { return state.device.status === 'live' ? state.device.rec : null; }
  function setDevice(d) {
    state.device = d;
    renderDevice();
    return d;
  }

  // Finds this browser's key for the signed-in person, or makes and adds one.
  function setupDevice() {
    if (!state.deviceSetup) {
      state.deviceSetup = findOrMakeKey()
        .catch((e) => setDevice({ status: 'error', message: e.message || String(e) }))
        .finally(() => { state.deviceSetup = null; });
    }
    return state.deviceSetup;
  }
  async function findOrMakeKey() {
    const me = state.me;
    if (!window.isSecureContext || !window.crypto || !crypto.subtle || !window.indexedDB) {
      return setDevice({ status: 'unavailable', message: 'This page is not a secure context (HTTPS or loopback), so it cannot hold a key and signs nothing; your home hospital signs for you where it may.' });
    }
    if (me.userType === 'doctor' && !me.homeHere) {
      return setDevice({ status: 'none', message: `A doctor's keys are made at their home's page (${me.home}).` });
    }
    const genesis = await genesisHash();
    const id = `${genesis}:${me.personId}`;
    const identity = await refreshIdentity();
    if (!identity) return setDevice({ status: 'error', message: 'Your identity cannot be read from the chain now: reload to try again.' });
    const rec = await keys.get(id);
    if (rec) {
      const row = identity.keys.find((k) => k.publicKey === rec.publicKey);
      if (row && row.status === 'live') {
        if (rec.status !== 'live') { rec.status = 'live'; await keys.put(rec); }
        return setDevice({ status: 'live', rec });
      }
      if (row && row.status === 'revoked') {
        return setDevice({ status: 'revoked', rec, message: "This browser's key was revoked: it signs nothing." });
      }
      if (!row && rec.status === 'asked' && Date.now() < rec.askExpiresMs) return setDevice({ status: 'asked', rec });
      await keys.del(id); // made but never added, or its ask expired: start again
    }
    return makeKey(genesis, id, true);
  }
  async function makeKey(genesis, id, retry) {
    const me = state.me;
    setDevice({ status: 'making' });
    let pair;
    try {
      pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    } catch (e) {
      return setDevice({ status: 'unavailable', message: 'This browser cannot make Ed25519 keys, so this page signs nothing; your home hospital signs for you where it may.' });
    }
    const publicKey = toHex(new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey)));
    const pop = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, pair.privateKey, popBytes(genesis, me.personId, publicKey, 'device', me.validator)));
    const rec = { id, genesis, person: me.personId, publicKey, privateKey: pair.privateKey, status: 'new', createdMs: Date.now() };
    await keys.put(rec);
    const r = await api('POST', '/api/keys', { publicKey, pop: toHex(pop), label: 'web browser' });
    if (!r.ok) {
      await keys.del(id);
      if (retry && /already registered/.test(r.data.message || '')) return makeKey(genesis, id, false);
      return setDevice({ status: 'error', message: r.data.message || 'The key could not be added' });
    }
    if (r.data.status === 'added') {
      rec.status = 'live';
      await keys.put(rec);
      await refreshIdentity();
      return setDevice({ status: 'live', rec });
    }
    rec.status = 'asked';
    rec.code = r.data.code;
    rec.askTx = r.data.txId;
    rec.askExpiresMs = Date.now() + 600000;
    await keys.put(rec);
    return setDevice({ status: 'asked', rec });
  }
  async function newKeyForThisBrowser() {
    if (state.device.rec) await keys.del(state.device.rec.id);
    await setupDevice();
  }
  // While this browser's key waits for its approval elsewhere: is it live yet?
  async function pollAsked() {
    if (state.device.status !== 'asked') return;
    const identity = await refreshIdentity();
    const rec = state.device.rec;
    const row = identity && identity.keys.find((k) => k.publicKey === rec.publicKey);
    if (row && row.status === 'live') {
      rec.status = 'live';
      await keys.put(rec);
      setDevice({ status: 'live', rec });
      toast("This browser's key is approved: it signs for you now");
    } else if (Date.now() >= rec.askExpiresMs) {
      setDevice({ status: 'error', rec, message: 'The code expired before it was approved: make a new key.' });
    }
  }

  // ---------- signing: check what is asked, then sign ----------
  const refusals = [];
  function refused(reason) {
    const message = `Refused to sign: ${reason}.`;
    refusals.push(message);
    result('sign-error', message, true);
    toast(message, true);
    return { ok: false, status: 0, refused: true, data: { success: false, message } };
  }
  // Calls an action, with this browser's key when it has a live one. When the node answers
  // that the action needs the device's signature, checks the envelope against `expect` ({kind,
  // check(meta, body) → problem or null}) and only then signs and posts the signature.
  async function act(path, body, expect) {
    const device = liveDevice();
    const payload = Object.assign({}, body);
    if (device) payload.devicePublicKey = device.publicKey;
    const r = await api('POST', path, payload);
    if (r.status !== 202 || !r.data.signatureNeeded) return r;
    if (!device) return refused('this browser holds no live key');
    let problem;
    try {
      problem = await checkEnvelope(r.data, device, expect);
    } catch (e) {
      problem = `the bytes cannot be read (${e.message})`;
    }
    if (problem) return refused(problem);
    $('sign-error').hidden = true;
    const signature = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, device.privateKey, fromHex(r.data.signingBytes)));
    return api('POST', `/api/sign/${encodeURIComponent(r.data.preparedId)}`, { signature: toHex(signature) });
  }
  async function checkEnvelope(answer, device, expect) {
    const { genesis, header } = decodeSigningBytes(fromHex(answer.signingBytes));
    if (genesis !== device.genesis) return 'it is for another chain than the one this key was made for';
    const s = header.signer;
    if (s.kind !== 'device' || s.person !== device.person || s.key !== device.publicKey) return "its signer is not this browser's key for you";
    if (header.meta.kind !== expect.kind) return `it is a "${header.meta.kind}", not the "${expect.kind}" you asked for`;
    const now = BigInt(Date.now());
    if (header.not_after_ms <= now || header.not_after_ms > now + HOUR_MS + CLOCK_SLACK_MS) return 'it is not valid for the next hour only';
    const body = fromHex(answer.tx && answer.tx.body);
    if (toHex(await sha256(body)) !== header.body_hash) return 'its body does not match its hash';
    // A sealed body is checked by its hash only: the page cannot open it (no ChaCha20 in
    // WebCrypto, and no key) and trusts its node that it seals `plain`, which it checks.
    if (SEALED_KINDS.includes(header.meta.kind)) {
      const plain = plainOf(header.meta.kind, answer.tx.plain);
      if (!plain) return 'its content is not shown';
      return expect.check(header.meta.meta, plain);
    }
    return expect.check(header.meta.meta, decodeBody(header.meta.kind, body));
  }
  // The kinds whose body is sealed by the node (docs/SECURITY.md, issue 10, §1.2).
  const SEALED_KINDS = ['add_record', 'grant', 'request_grant'];
  // `plain` of a prepared envelope, in its kind's shape, or null.
  function plainOf(kind, plain) {
    if (!plain || typeof plain !== 'object') return null;
    const fields = kind === 'add_record' ? ['diagnosis', 'prescription', 'notes'] : ['purpose'];
    if (!fields.every((f) => typeof plain[f] === 'string')) return null;
    return Object.fromEntries(fields.map((f) => [f, plain[f]]));
  }
  // The first field of `pairs` ([name, signed, wanted]) whose signed value is not the wanted one.
  function differs(...pairs) {
    for (const [name, got, want] of pairs) {
      if (JSON.stringify(got) !== JSON.stringify(want)) return `its ${name} is not the one you asked for`;
    }
    return null;
  }
  // Revocations take two clicks: the first arms the button (kept across the lists' refreshes).
  const ARMED_TEXT = 'Click again to confirm: it cannot be undone';
  function secondClick(id, button) {
    if (state.armed === id) { state.armed = null; return true; }
    state.armed = id;
    button.textContent = ARMED_TEXT;
    return false;
  }
  function armedText(id, text) { return state.armed === id ? ARMED_TEXT : text; }
  const noBody = (body) => (Object.keys(body).length ? 'it carries a body' : null);
  const scopeOf = (s) => (s === 'write' ? 'write' : 'read');

  // ---------- views ----------
  function render() {
    const me = state.me;
    show('login-view', !me);
    show('doctor-view', !!me && me.userType === 'doctor');
    show('patient-view', !!me && me.userType === 'patient');
    show('who', !!me);
    show('key-card', !!me);
    if (!me) { $('login-id').focus(); return; }
    setText('who-role', me.userType);
    setText('who-id', me.name ? `${me.id} · Dr ${me.name}` : me.id);
    $('who-dept').textContent = [me.department, me.home ? `home: ${me.home}` : ''].filter(Boolean).join(' · ');
    // The key card sits beside the doctor's read card, or the patient's grants.
    $(me.userType === 'doctor' ? 'read-card' : 'grants-card').after($('key-card'));
    show('ask-form', me.userType === 'patient');
    stopTimers();
    every(1000, tickCountdowns);
    every(3000, pollAsked);
    setupDevice();
    if (me.userType === 'doctor') startDoctor(); else startPatient();
  }
  function whoFrom(d) {
    return {
      userType: d.userType, id: d.id || d.patientId || d.doctorId, department: d.department, name: d.name,
      personId: d.personId, home: d.home, homeHere: d.homeHere, validator: d.validator,
    };
  }

  // This browser's key, the person's keys and recoveries (from the chain), and asks to approve.
  function renderDevice() {
    const d = state.device;
    const badge = $('key-badge');
    const words = {
      live: 'signs on this device', asked: 'key waiting for approval', making: 'making a key…',
      revoked: 'key revoked', unavailable: 'no device key', none: 'no device key', error: 'no device key',
    };
    badge.textContent = words[d.status] || 'no device key';
    badge.dataset.status = d.status;
    badge.hidden = !state.me;
    const status = $('device-status');
    status.dataset.status = d.status;
    if (d.status === 'live') status.textContent = `This browser holds a key of yours (${short(d.rec.publicKey, 16)}): it checks and signs what you approve here.`;
    else if (d.status === 'asked') status.textContent = 'This browser made a key for you. It signs once you approve it on a page that already holds one of your keys.';
    else if (d.status === 'making') status.textContent = 'Making a key for this browser…';
    else status.textContent = d.message || 'This browser holds no key of yours.';
    show('device-code-box', d.status === 'asked');
    if (d.status === 'asked') {
      $('device-code').textContent = d.rec.code;
      $('device-code-where').textContent = state.me && state.me.home ? state.me.home : 'your home hospital';
    }
    show('device-new', d.status === 'revoked' || d.status === 'error');
    renderKeys();
  }
  async function refreshIdentity() {
    const r = await api('GET', '/api/identity');
    if (!r.ok) return null;
    state.identity = r.data;
    renderKeys();
    return r.data;
  }
  function keyOrigin(k) {
    if (k.kind === 'custodial') return `held by ${k.origin} for you (custodial)`;
    const added = { device: 'approved on one of your devices', custodial: `added by ${k.origin}`, validator: `enrolled by ${k.origin}` }[k.addedBy] || '';
    return `device key made at ${k.origin}'s page${added ? `, ${added}` : ''}`;
  }
  function renderKeys() {
    const list = $('keys-list');
    clear(list);
    const identity = state.identity;
    if (!identity) return;
    const mine = state.device.rec && state.device.rec.publicKey;
    for (const k of identity.keys || []) {
      const item = el('li', { class: 'item', 'data-test': 'key', 'data-key': k.publicKey, 'data-kind': k.kind, 'data-status': k.status },
        el('div', { class: 'item-head' },
          el('span', { 'data-test': 'key-origin', text: keyOrigin(k) }),
          el('span', {},
            k.publicKey === mine ? el('span', { class: 'badge', 'data-test': 'this-browser', text: 'this browser' }) : '',
            ' ',
            el('span', { class: `badge ${k.status}`, 'data-test': 'key-status', text: k.status }))),
        el('span', { class: 'muted' }, el('code', { title: k.publicKey, text: short(k.publicKey, 16) }), k.label ? ` · ${k.label}` : ''));
      if (k.kind === 'device' && k.origin === identity.home && k.status !== 'revoked') {
        // docs/SECURITY.md §10.6: whoever holds it can revoke every other key, for good.
        item.append(el('span', { class: 'muted', 'data-test': 'home-origin-note', text: "Made at your home's page: it can revoke every other key of yours and cancel a recovery. If this device is lost, revoke it at once." }));
      }
      if (k.status !== 'revoked') {
        const revoke = el('button', { class: 'btn danger', type: 'button', 'data-test': 'revoke-key' }, armedText(k.publicKey, 'Revoke'));
        revoke.addEventListener('click', () => revokeKey(k, revoke));
        item.append(el('div', { class: 'item-actions' }, revoke));
      }
      list.append(item);
    }
    const rec = $('recoveries');
    clear(rec);
    for (const r of (identity.recoveries || []).filter((x) => !x.cancelled && x.effectiveMs > Date.now())) {
      const cancel = el('button', { class: 'btn danger', type: 'button', 'data-test': 'cancel-recovery' }, armedText(r.publicKey, 'Cancel this recovery'));
      cancel.addEventListener('click', () => revokeKey({ publicKey: r.publicKey, recovery: true }, cancel));
      rec.append(el('li', { class: 'item warn', 'data-test': 'recovery' },
        el('span', { text: `Recovery of your identity started by ${identity.home}: its new key is usable from ${fmtTime(r.effectiveMs)}.` }),
        el('span', { class: 'muted', text: "If you did not ask for it, cancel it from a key made at your home's page." }),
        el('div', { class: 'item-actions' }, cancel)));
    }
    renderYoungKeys();
  }
  // A live key added with the password alone waits before it shares the history with another
  // hospital (docs/SECURITY.md, issue 10, §4.2): the patient is told, and told what to do if it
  // was not them.
  function renderYoungKeys() {
    const box = $('young-keys');
    clear(box);
    const identity = state.identity;
    if (!identity || !state.me || state.me.userType !== 'patient') return;
    const mine = state.device.rec && state.device.rec.publicKey;
    const now = Date.now();
    for (const k of (identity.keys || []).filter((x) => x.youngUntilMs && x.youngUntilMs > now)) {
      const how = k.addedBy === 'custodial' ? 'with your password' : 'on the approval of a key that cannot vouch for it yet';
      const whose = k.publicKey === mine ? "This browser's key was" : 'A key was';
      box.append(el('li', { class: 'item warn', 'data-test': 'young-key-notice', 'data-key': k.publicKey, 'data-until': k.youngUntilMs },
        el('strong', { 'data-test': 'young-key-added', text: `${whose} added for you at ${k.origin} on ${fmtTime(k.addedMs)} ${how}.` }),
        el('span', { 'data-test': 'young-key-until', text: `It cannot share your history with another hospital, nor ask for an erasure, until ${fmtTime(k.youngUntilMs)}.` }),
        k.publicKey === mine
          ? el('span', { class: 'muted', text: 'If you just signed in here, there is nothing to do.' })
          : el('span', { class: 'muted', 'data-test': 'young-key-not-you', text: `Not you? Revoke it now under “Keys and signatures” (any key of yours can), and tell ${identity.home}: someone knows your password.` })));
    }
  }
  async function revokeKey(k, button) {
    const me = state.me;
    if (!secondClick(k.publicKey, button)) return;
    const r = await act(`/api/keys/${encodeURIComponent(k.publicKey)}/revoke`, {}, {
      kind: 'revoke_key',
      check: (m, body) => differs(['person', m.person, me.personId], ['key', m.key, k.publicKey]) || noBody(body),
    });
    if (!r.ok) { if (!r.refused) toast(r.data.message || 'Failed', true); return; }
    toast(k.recovery ? 'Recovery cancelled' : 'Key revoked');
    await refreshIdentity();
    if (state.device.rec && state.device.rec.publicKey === k.publicKey) await setupDevice();
  }

  // Approving, by its typed code, a sign-in elsewhere: a link or a key made at another page.
  async function onAskFind(ev) {
    ev.preventDefault();
    const code = $('ask-code').value.trim();
    show('ask-match', false);
    $('ask-result').hidden = true;
    if (!/^[0-9]{6}$/.test(code)) { result('ask-result', 'Type the six digits shown on the other page', true); return; }
    const r = await api('GET', '/api/asks');
    if (!r.ok) { result('ask-result', r.data.message || 'Failed', true); return; }
    const matching = [];
    for (const a of r.data.asks || []) {
      if (/^[0-9a-f]{64}$/.test(a.id) && (await askCode(a.id)) === code) matching.push(a);
    }
    const hospitals = [...new Set(matching.map((a) => a.hospital))];
    if (hospitals.length > 1) {
      const other = hospitals.filter((h) => h !== matching[0].hospital).join(', ');
      result('ask-result', `Another hospital (${other}) tried to take over this code: ask ${matching[0].hospital} for a new one.`, true);
      return;
    }
    if (matching.length !== 1) { result('ask-result', 'No request to approve has this code: check it, or ask for a new one', true); return; }
    const ask = matching[0];
    state.ask = ask;
    $('ask-sentence').textContent = ask.what === 'link'
      ? `Let ${ask.hospital} serve you as ${state.me.id}.`
      : `Let a browser at ${ask.hospital}'s page sign as you.`;
    show('ask-match', true);
  }
  async function onAskApprove() {
    const ask = state.ask;
    const me = state.me;
    if (!ask) return;
    const code = $('ask-code').value.trim();
    const validator = (await validatorIndex(ask.hospital));
    const r = await act('/api/asks/approve', { code }, {
      kind: ask.what === 'link' ? 'link' : 'add_key',
      check: (m, body) => (ask.what === 'link'
        ? differs(['person', m.person, me.personId], ['ask', m.ask, ask.id], ['hospital', m.validator, validator])
        : differs(['person', m.person, me.personId], ['ask', m.ask, ask.id], ['key', m.key && m.key.key, ask.publicKey], ['origin', m.key && m.key.origin, validator])) || noBody(body),
    });
    if (!r.ok) { if (!r.refused) result('ask-result', r.data.message || 'Failed', true); return; }
    show('ask-match', false);
    $('ask-code').value = '';
    state.ask = null;
    result('ask-result', ask.what === 'link' ? `${ask.hospital} may now serve you.` : `The browser at ${ask.hospital}'s page now signs for you.`);
    refreshIdentity();
  }
  async function validatorIndex(name) {
    if (!state.validators) {
      const r = await api('GET', '/api/status');
      if (r.ok) state.validators = r.data.validators || [];
    }
    const v = (state.validators || []).find((x) => x.name === name);
    return v ? v.id : null;
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
    state.me = whoFrom(r.data);
    render();
  }
  async function onLogout() {
    await api('POST', '/api/logout');
    stopTimers();
    state.me = null;
    state.identity = null;
    state.device = { status: 'none' };
    clearSensitive();
    render();
  }
  function clearSensitive() {
    for (const id of ['vr-records', 'history-list', 'access-body', 'pending-list', 'rc-list', 'dg-list', 'grant-list', 'blocks-body', 'keys-list', 'recoveries', 'erasure-list', 'young-keys']) clear($(id));
    for (const id of ['ip-result', 'approved', 'ar-result', 'cut-result', 'sign-error', 'ask-result', 'ask-match']) $(id).hidden = true;
    document.querySelectorAll('input:not([type=radio]), textarea').forEach((i) => { i.value = ''; });
    state.codeGrants.clear();
    state.sentRequests = [];
    state.history = [];
    state.erasures = [];
  }

  // ---------- doctor ----------
  function startDoctor() {
    $('ar-department').value = state.me.department || '';
    refreshDoctorGrants();
    refreshRequests();
    refreshStatus();
    refreshBlocks();
    every(3000, refreshDoctorGrants);
    every(3000, refreshRequests);
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
  function scopeChosen(selectId) {
    const v = $(selectId).value;
    return v === 'write' ? 'write' : { read: { durationMs: Number(v) } };
  }
  async function onInPerson(ev) {
    ev.preventDefault();
    const body = { patientId: $('ip-patient').value.trim(), password: $('ip-password').value };
    const purpose = $('ip-purpose').value.trim();
    if (purpose) body.purpose = purpose;
    $('ip-password').value = '';
    const r = await api('POST', '/api/request_consent', body);
    if (!r.ok) { $('ip-result').hidden = true; toast(r.data.message || 'Consent failed', true); return; }
    // The code selects this grant: what a record signed with it must name.
    if (r.data.otp) state.codeGrants.set(r.data.otp, r.data.grantTxId);
    $('ip-code').textContent = r.data.otp;
    $('ip-result').hidden = false;
    countdown('ip-expiry', Date.now() + r.data.expiry * 1000, () => { $('ip-code').textContent = '------'; });
    $('ar-patient').value = body.patientId;
    $('vr-patient').value = body.patientId;
    refreshDoctorGrants();
  }
  async function onRemote(ev) {
    ev.preventDefault();
    const me = state.me;
    const patientId = $('rc-patient').value.trim();
    const purpose = $('rc-purpose').value.trim();
    const chosen = scopeChosen('rc-scope');
    const wanted = chosen === 'write' ? 'write' : { read: { duration_ms: String(chosen.read.durationMs) } };
    const body = { patientId, purpose, scope: chosen };
    const r = await act('/api/consents/request', body, {
      kind: 'request_grant',
      // A login name is this hospital's to map to a person; a person id typed is checked.
      check: (m, b) => differs(['doctor', m.doctor, me.personId], ['scope', plain(m.scope), wanted], ['purpose', b.purpose, purpose])
        || (isPersonHex(patientId) ? differs(['patient', m.patient, patientId]) : null),
    });
    if (!r.ok) { if (!r.refused) toast(r.data.message || 'Request failed', true); return; }
    toast(`Request sent to ${patientId}`);
    // Signed here, /api/sign answers the transaction's id; signed by the hospital, the request.
    const id = r.data.consent ? r.data.consent.id : r.data.txId;
    state.sentRequests.unshift({ id, patientId, purpose });
    state.sentRequests = state.sentRequests.slice(0, 6);
    $('rc-purpose').value = '';
    $('ar-patient').value = patientId;
    $('vr-patient').value = patientId;
    refreshRequests();
  }
  // The doctor's requests sent from this page, as the chain has them now.
  async function refreshRequests() {
    const list = $('rc-list');
    const views = await Promise.all(state.sentRequests.map((s) => api('GET', `/api/consents/${s.id}`)));
    clear(list);
    const now = Date.now();
    state.sentRequests.forEach((s, i) => {
      // Not on chain yet: the request waits in this hospital's next block.
      const c = views[i].ok ? views[i].data.consent : { state: 'pending', time_left_ms: 0 };
      const st = c.state;
      const left = el('span', { class: 'muted', 'data-countdown': `rc-${s.id}` });
      list.append(el('li', { class: 'item', 'data-test': 'rc-item', 'data-state': st },
        el('div', { class: 'item-head' },
          el('strong', { text: s.patientId }),
          el('span', { class: `badge ${st}`, 'data-test': 'rc-state', text: st.replace('_', ' ') })),
        el('span', { text: s.purpose }),
        c.time_left_ms > 0 ? el('span', { class: 'muted' }, 'answer within ', left) : ''));
      if (c.time_left_ms > 0) countdown(`rc-${s.id}`, now + c.time_left_ms);
    });
  }
  // Grants received, from the chain; live write grants can be used for a record by id.
  async function refreshDoctorGrants() {
    const r = await api('GET', '/api/consents');
    if (!r.ok) return;
    state.doctorGrants = r.data.consents || [];
    const list = $('dg-list');
    clear(list);
    const now = Date.now();
    const select = $('ar-grant');
    const chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const g of state.doctorGrants.slice(0, 8)) {
      list.append(el('li', { class: 'item', 'data-test': 'dg-item', 'data-id': g.id, 'data-state': g.state },
        el('div', { class: 'item-head' },
          el('strong', { text: g.patient_id }),
          el('span', {},
            el('span', { class: 'badge', text: g.scope === 'read' ? `read ${fmtDuration(g.duration_ms)}` : 'one record' }),
            ' ',
            el('span', { class: `badge ${g.state}`, 'data-test': 'dg-state', text: g.state }))),
        el('span', { class: 'muted', 'data-test': 'dg-attested', text: g.attested === 'device' ? `approved on ${g.patient_id}'s device` : 'attested in person at the patient\'s home' }),
        g.keys ? el('span', { class: 'muted', 'data-test': 'dg-keys', text: keysText(g.keys) }) : '',
        g.time_left_ms > 0 ? el('span', { class: 'muted' }, 'for ', el('span', { 'data-countdown': `dg-${g.id}` })) : ''));
      if (g.time_left_ms > 0) countdown(`dg-${g.id}`, now + g.time_left_ms);
    }
    for (const g of state.doctorGrants.filter((x) => x.scope === 'write' && x.state === 'active')) {
      select.append(el('option', { value: g.id, 'data-patient': g.patient_id, text: `${g.patient_id} · ${g.attested === 'device' ? 'approved on device' : 'in person'} · ${short(g.id, 8)}` }));
    }
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
  // A read grant's key status (docs/SECURITY.md §13): what this hospital can open, what waits.
  function keysText(k) {
    const held = `${k.held} record${k.held === 1 ? '' : 's'} readable here`;
    if (!k.waiting) return held;
    return `${held}; ${k.waiting} wait${k.waiting === 1 ? 's' : ''} for ${k.waiting === 1 ? 'its key' : 'their keys'} from ${k.from} since ${fmtTime(k.since_ms)}: they arrive when it is reachable`;
  }
  async function onGrantChosen() {
    const o = $('ar-grant').selectedOptions[0];
    if (o && o.value) { $('ar-patient').value = o.dataset.patient; $('ar-otp').value = ''; }
  }
  async function onAddRecord(ev) {
    ev.preventDefault();
    const me = state.me;
    const patientId = $('ar-patient').value.trim();
    const otp = $('ar-otp').value.trim();
    const grantId = $('ar-grant').value;
    const medical = { diagnosis: $('ar-diagnosis').value, prescription: $('ar-prescription').value, notes: $('ar-notes').value };
    const body = { patientId, doctorId: me.id, medical_data: medical };
    if (otp) body.otp = otp; else if (grantId) body.grantId = grantId;
    const dept = $('ar-department').value.trim();
    if (dept) body.department = dept;
    // The grant the record must use: the one picked, or the one this page's code selected.
    const wantedGrant = otp ? state.codeGrants.get(otp) : grantId || undefined;
    $('ar-submit').disabled = true;
    const r = await act('/api/add_record', body, {
      kind: 'add_record',
      check: async (m, b) => differs(['doctor', m.doctor, me.personId], ['department', m.department, me.department],
        ['diagnosis', b.diagnosis, medical.diagnosis], ['prescription', b.prescription, medical.prescription], ['notes', b.notes, medical.notes])
        || (wantedGrant ? differs(['grant', m.grant, wantedGrant]) : null)
        || grantMatches(m, patientId),
    });
    $('ar-submit').disabled = false;
    if (!r.ok) { if (!r.refused) result('ar-result', r.data.message || 'Failed', true); return; }
    result('ar-result', r.data.message + (r.data.txId ? ` (transaction ${short(r.data.txId)})` : ''));
    for (const id of ['ar-otp', 'ar-diagnosis', 'ar-prescription', 'ar-notes']) $(id).value = '';
    refreshDoctorGrants();
  }
  // The signed grant is a live write grant of this doctor for the patient typed, and names
  // the same patient as the record.
  async function grantMatches(m, patientId) {
    const r = await api('GET', `/api/consents/${m.grant}`);
    const g = r.ok && r.data.consent;
    if (!g || g.kind !== 'grant' || g.scope !== 'write') return 'its grant is not a write grant of yours';
    if (g.patient_id !== m.patient || g.doctor_id !== m.doctor) return 'its grant is for another patient or doctor';
    if (!isPersonHex(patientId)) {
      await refreshDoctorGrants();
      const listed = state.doctorGrants.find((x) => x.id === m.grant);
      if (!listed || listed.patient_id !== patientId) return `its grant is not one of ${patientId}'s`;
    } else if (m.patient !== patientId) return 'its patient is not the one you asked for';
    return null;
  }
  async function onReadRecords(ev) {
    ev.preventDefault();
    const body = { patientId: $('vr-patient').value.trim() };
    const r = await api('POST', '/api/doctor/patient_records', body);
    const list = $('vr-records');
    clear(list);
    if (!r.ok) { toast(r.data.message || 'Failed', true); return; }
    renderRecords(list, r.data.records || [], false);
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
    state.validators = s.validators || state.validators;
    const m = s.metrics || {};
    setText('st-tps', m.tps !== undefined ? `${Number(m.tps).toFixed(1)} tx/s` : '–');
    setText('st-latency', m.latency_ms !== undefined ? `${Math.round(m.latency_ms)} ms` : '–');
    setText('st-success', m.success_rate !== undefined ? `${Number(m.success_rate).toFixed(1)} %` : '–');
    setText('st-txcount', m.tx_count);
    setText('st-height', s.height);
    setText('st-chain', s.pending !== undefined ? `${s.pending} pending` : '–');
    const list = $('st-validators');
    clear(list);
    const dash = (x) => (x === undefined || x === null ? '–' : x);
    for (const v of s.validators || []) {
      const contact = v.name === s.node ? 'this validator' : fmtAgo(v.last_contact_ms);
      list.append(el('tr', { class: 'validator', 'data-test': 'validator' },
        el('td', {}, el('strong', { text: v.name })),
        el('td', {}, el('span', { class: `badge ${v.state}`, text: v.state }),
          v.primary ? ' ' : '',
          v.primary ? el('span', { class: 'badge', 'data-test': 'primary', text: 'primary' }) : ''),
        el('td', { 'data-test': 'validator-view', text: dash(v.view) }),
        el('td', { 'data-test': 'validator-height', text: dash(v.height) }),
        el('td', { 'data-test': 'validator-contact', text: contact })));
    }
    refreshCharts();
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
  function fmtAgo(ms) {
    if (ms === undefined || ms === null) return 'never';
    return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s ago`;
  }
  // The charts: inline SVG drawn here from the validator's per-second samples.
  const SVG = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  // Draws `series` ([{values, cls, join}]) of `samples` into `svg`: time on x (oldest left),
  // the value on y from 0 to a round maximum. A null breaks the line, unless `join` (latency
  // is known only in the seconds a block committed); a lone point is drawn as a dot.
  function drawChart(svg, samples, series) {
    clear(svg);
    const W = 320, H = 120, left = 34, right = 6, top = 8, bottom = 18;
    const values = series.flatMap((s) => s.values).filter((v) => typeof v === 'number');
    const max = niceMax(Math.max(0, ...values));
    svg.append(svgEl('line', { class: 'axis', x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
    svg.append(svgEl('line', { class: 'axis', x1: left, y1: top, x2: left, y2: H - bottom }));
    svg.append(svgEl('text', { class: 'tick', x: left - 4, y: top + 8, 'text-anchor': 'end' }, String(max)));
    svg.append(svgEl('text', { class: 'tick', x: left - 4, y: H - bottom, 'text-anchor': 'end' }, '0'));
    if (samples.length < 2) {
      svg.append(svgEl('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'waiting for data'));
      return;
    }
    const t0 = samples[0].t_ms, t1 = samples[samples.length - 1].t_ms;
    const span = Math.max(1, t1 - t0);
    const minutes = span / 60000;
    svg.append(svgEl('text', { class: 'tick', x: left, y: H - 4 },
      minutes >= 1 ? `-${minutes.toFixed(minutes < 10 ? 1 : 0)} min` : `-${Math.round(span / 1000)} s`));
    svg.append(svgEl('text', { class: 'tick', x: W - right, y: H - 4, 'text-anchor': 'end' }, 'now'));
    const x = (t) => left + ((t - t0) / span) * (W - left - right);
    const y = (v) => H - bottom - (v / max) * (H - bottom - top);
    for (const s of series) {
      let run = [];
      const flush = () => {
        if (run.length) svg.append(svgEl('polyline', { class: `series ${s.cls}`, 'data-test': `series-${s.cls}`, points: run.map((p) => p.join(',')).join(' ') }));
        if (run.length === 1) svg.append(svgEl('circle', { class: `dot ${s.cls}`, cx: run[0][0], cy: run[0][1], r: 1.8 }));
        run = [];
      };
      samples.forEach((sample, i) => {
        const v = s.values[i];
        if (typeof v === 'number') run.push([x(sample.t_ms).toFixed(1), y(v).toFixed(1)]);
        else if (!s.join) flush();
      });
      flush();
    }
  }
  async function refreshCharts() {
    const r = await api('GET', '/api/status/series');
    if (!r.ok) return;
    const samples = r.data.samples || [];
    drawChart($('chart-tps'), samples, [{ cls: 'tps', values: samples.map((s) => s.committed_tx_per_s) }]);
    drawChart($('chart-latency'), samples, [
      { cls: 'max', join: true, values: samples.map((s) => s.latency_max_ms) },
      { cls: 'mean', join: true, values: samples.map((s) => s.latency_mean_ms) },
    ]);
    const last = samples[samples.length - 1];
    setText('chart-tps-now', last ? `${last.committed_tx_per_s.toFixed(1)} tx/s` : null);
    const lat = samples.slice().reverse().find((s) => typeof s.latency_mean_ms === 'number');
    setText('chart-latency-now', lat ? `${Math.round(lat.latency_mean_ms)} ms` : null);
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
    every(4000, refreshGrants);
    every(4000, refreshErasures);
  }
  async function refreshPatient() {
    await Promise.all([refreshPending(), refreshGrants(), refreshHistory(), refreshAccessLog(), refreshIdentity(), refreshErasures()]);
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
      const approve = el('button', { class: 'btn ok', type: 'button', 'data-test': 'approve' }, 'Approve on this device');
      const deny = el('button', { class: 'btn danger', type: 'button', 'data-test': 'deny' }, 'Deny');
      approve.addEventListener('click', () => answer(c, true));
      deny.addEventListener('click', () => answer(c, false));
      const what = c.scope === 'write' ? 'to add one record' : `to read your records for ${fmtDuration(c.scope.read.duration_ms)}`;
      list.append(el('li', { class: 'item', 'data-test': 'pending-request', 'data-id': c.id },
        el('div', { class: 'item-head' },
          el('strong', {}, 'Dr ', el('span', { 'data-test': 'pending-doctor', text: c.doctor_id }), c.doctor_name ? ` (${c.doctor_name})` : ''),
          el('span', { class: 'badge', 'data-test': 'pending-department', text: c.department })),
        el('span', { class: 'muted', 'data-test': 'pending-hospital', text: `${c.hospital} asks ${what}` }),
        el('span', { 'data-test': 'pending-purpose', text: c.purpose }),
        el('span', { class: 'muted' }, 'answer within ', el('span', { 'data-countdown': `pr-${c.id}` })),
        el('div', { class: 'item-actions' }, approve, deny)));
      countdown(`pr-${c.id}`, now + c.time_left_ms);
    }
  }
  async function answer(c, approve) {
    const me = state.me;
    let r;
    if (approve) {
      // The request as the chain holds it: its doctor and scope are what the grant must name.
      const q = await api('GET', `/api/consents/${c.id}`);
      if (!q.ok || q.data.consent.kind !== 'request') { toast(q.data.message || 'This request is gone', true); refreshPending(); return; }
      const req = q.data.consent;
      r = await act(`/api/consents/${encodeURIComponent(c.id)}/approve`, {}, {
        kind: 'grant',
        check: (m, body) => differs(['patient', m.patient, me.personId], ['doctor', m.doctor, req.doctor_id], ['request', m.request, c.id],
          ['attestation', m.attested, 'device'], ['scope', scopeOf(m.scope), scopeOf(req.scope)])
          || (m.scope !== 'write' && BigInt(m.scope.read.duration_ms) > BigInt(req.scope.read.duration_ms) ? 'it lasts longer than asked' : null)
          || (typeof body.purpose === 'string' ? null : 'its body is not a purpose'),
      });
    } else {
      r = await act(`/api/consents/${encodeURIComponent(c.id)}/deny`, {}, {
        kind: 'revoke',
        check: (m, body) => differs(['patient', m.patient, me.personId], ['request', m.target, c.id]) || noBody(body),
      });
    }
    if (!r.ok) { if (!r.refused) toast(r.data.message || 'Failed', true); refreshPending(); return; }
    if (approve) {
      $('approved-doctor').textContent = `Dr ${c.doctor_name || c.doctor_id}`;
      $('approved-what').textContent = c.scope === 'write' ? 'may add one record' : 'may read your records';
      $('approved').hidden = false;
      countdown('approved-expiry', r.data.expiresAt ? r.data.expiresAt : Date.now(), () => { $('approved').hidden = true; });
    } else {
      toast(`Request from Dr ${c.doctor_id} denied`);
    }
    refreshPending();
    refreshGrants();
  }
  // The patient's grants, from the chain: how each was given, its state, and revocation.
  async function refreshGrants() {
    const r = await api('GET', '/api/consents');
    if (!r.ok) return;
    const list = $('grant-list');
    clear(list);
    const now = Date.now();
    const grants = r.data.consents || [];
    show('grants-empty', grants.length === 0);
    for (const g of grants.slice(0, 12)) {
      const how = g.attested === 'device' ? 'approved on your device' : `attested in person at ${state.me.home || 'your home hospital'}`;
      const item = el('li', { class: 'item', 'data-test': 'grant', 'data-id': g.id, 'data-state': g.state, 'data-attested': g.attested },
        el('div', { class: 'item-head' },
          el('strong', {}, 'Dr ', el('span', { text: g.doctor_name || g.doctor_id })),
          el('span', {},
            el('span', { class: 'badge', text: g.scope === 'read' ? `read ${fmtDuration(g.duration_ms)}` : 'one record' }),
            ' ',
            el('span', { class: `badge ${g.state}`, 'data-test': 'grant-state', text: g.state }))),
        el('span', { class: 'muted', 'data-test': 'grant-attested', text: how }),
        el('span', { class: 'muted' }, fmtTime(g.granted_ms),
          g.time_left_ms > 0 ? ' · ' : '', g.time_left_ms > 0 ? el('span', { 'data-countdown': `gr-${g.id}` }) : '',
          g.time_left_ms > 0 ? ' left' : ''));
      if (g.state === 'active') {
        const revoke = el('button', { class: 'btn danger', type: 'button', 'data-test': 'revoke-grant' }, armedText(g.id, 'Revoke'));
        revoke.addEventListener('click', () => revokeGrant(g, revoke));
        item.append(el('div', { class: 'item-actions' }, revoke));
      }
      list.append(item);
      if (g.time_left_ms > 0) countdown(`gr-${g.id}`, now + g.time_left_ms);
    }
  }
  async function revokeGrant(g, button) {
    const me = state.me;
    if (!secondClick(g.id, button)) return;
    const r = await act(`/api/grants/${encodeURIComponent(g.id)}/revoke`, {}, {
      kind: 'revoke',
      check: (m, body) => differs(['patient', m.patient, me.personId], ['grant', m.target, g.id]) || noBody(body),
    });
    if (!r.ok) { if (!r.refused) toast(r.data.message || 'Failed', true); return; }
    toast(`Revocation of Dr ${g.doctor_name || g.doctor_id}'s grant sent: the chain orders it before any later use`);
    refreshGrants();
  }
  // Each read of the history is logged on chain: it is read on Refresh only, and drawn again
  // from memory when the erasure requests change.
  async function refreshHistory() {
    const r = await api('POST', '/api/patient_records', {});
    if (!r.ok) return;
    state.history = (r.data.records || []).slice().reverse();
    renderHistory();
  }
  function renderHistory() {
    const list = $('history-list');
    clear(list);
    show('history-empty', state.history.length === 0);
    renderRecords(list, state.history, true);
  }
  // The patient's erasure requests and the hospitals' answers, from the chain.
  async function refreshErasures() {
    const r = await api('GET', '/api/erasures');
    if (!r.ok) return;
    const erasures = r.data.erasures || [];
    const changed = JSON.stringify(erasures) !== JSON.stringify(state.erasures);
    state.erasures = erasures;
    const list = $('erasure-list');
    clear(list);
    show('erasures-empty', erasures.length === 0);
    for (const e of erasures) {
      const what = e.kind === 'add_record' ? `${e.department || 'A'} record of ${fmtTime(e.writtenMs)}`
        : e.kind === 'request_grant' ? `A consent request of ${fmtTime(e.writtenMs)}` : `A grant of ${fmtTime(e.writtenMs)}`;
      list.append(el('li', { class: 'item', 'data-test': 'erasure', 'data-id': e.id, 'data-tx': e.tx, 'data-state': e.state },
        el('div', { class: 'item-head' },
          el('strong', {}, what, e.doctorName ? ` by Dr ${e.doctorName}` : ''),
          el('span', { class: `badge ${e.state}`, 'data-test': 'erasure-state', text: e.state })),
        el('span', { 'data-test': 'erasure-notice', text: e.notice }),
        el('span', { class: 'muted', 'data-test': 'erasure-how', text: `${e.requestedHow}, ${fmtTime(e.requestedMs)}` })));
    }
    if (changed && state.history.length) renderHistory();
  }
  // Asks the record's hospital to erase it: on this browser's key, or, while that key is in
  // its wait (§4.2), in person here, signed by the home (the API's custodial path).
  async function requestErasure(rec, button) {
    const me = state.me;
    if (!secondClick(`erase-${rec.tx_id}`, button)) return;
    const device = liveDevice();
    const own = device && state.identity && (state.identity.keys || []).find((k) => k.publicKey === device.publicKey);
    const young = !device || !own || (own.youngUntilMs && own.youngUntilMs > Date.now());
    const path = `/api/records/${encodeURIComponent(rec.tx_id)}/erasure`;
    const r = young ? await api('POST', path, {}) : await act(path, {}, {
      kind: 'request_erasure',
      check: (m, body) => differs(['patient', m.patient, me.personId], ['record', m.tx, rec.tx_id]) || noBody(body),
    });
    if (!r.ok) { if (!r.refused) toast(r.data.message || 'Failed', true); renderHistory(); return; }
    toast(`Erasure requested: ${rec.origin || 'the hospital that wrote it'} answers`);
    await refreshErasures();
    renderHistory();
  }
  // Who signed a record, from the chain: the doctor's device, or their home for them.
  function signerText(rec) {
    const doctor = `Dr ${rec.doctorName || rec.doctor_id}`;
    return rec.signerKind === 'device'
      ? `signed on ${doctor}'s device${rec.origin ? ` (key made at ${rec.origin}'s page)` : ''}`
      : `signed by ${rec.origin || 'the hospital'} for ${doctor}`;
  }
  function renderRecords(list, records, own) {
    const tpl = $('t-record');
    for (const rec of records) {
      const li = tpl.content.firstElementChild.cloneNode(true);
      const put = (cls, v) => { li.querySelector(cls).textContent = v === undefined || v === null || v === '' ? '–' : String(v); };
      const opened = !rec.state || rec.state === 'open';
      li.dataset.tx = rec.tx_id || '';
      li.dataset.state = rec.state || 'open';
      // Not open here: the notice says why (erased, waiting for its key, readable elsewhere).
      put('.r-diagnosis', opened ? rec.diagnosis : rec.notice || rec.diagnosis);
      put('.r-department', rec.department);
      put('.r-prescription', rec.prescription);
      put('.r-notes', rec.notes);
      if (!opened) li.querySelector('.r-prescription').parentElement.hidden = true;
      if (!rec.notes) li.querySelector('.r-notes-line').hidden = true;
      put('.r-doctor', `Dr ${rec.doctorName || rec.doctor_id}`);
      put('.r-time', fmtTime(rec.timestamp_ms));
      put('.r-height', rec.height);
      put('.r-consent', short(rec.consent_hash, 16));
      li.querySelector('.r-consent').title = rec.consent_hash || '';
      put('.r-signer', signerText(rec));
      li.querySelector('.r-signer').dataset.kind = rec.signerKind || '';
      put('.r-attested', rec.attested === 'device' ? `consent approved on ${own ? 'your' : "the patient's"} device` : 'consent attested in person');
      if (own) erasureOf(li, rec);
      list.append(li);
    }
  }
  // On the patient's own record: its pending erasure request, or the button to ask for one
  // (at the home only: a request is signed with a key of the home, §7.1).
  function erasureOf(li, rec) {
    if (rec.state === 'erased') return;
    const pending = state.erasures.find((e) => e.tx === rec.tx_id && e.state === 'pending');
    if (pending) {
      const note = li.querySelector('.r-erasure');
      note.textContent = `Erasure requested: ${pending.notice}`;
      note.hidden = false;
      return;
    }
    if (!state.me.homeHere) return;
    const button = li.querySelector('.r-erase');
    button.textContent = armedText(`erase-${rec.tx_id}`, 'Request erasure');
    button.addEventListener('click', () => requestErasure(rec, button));
    li.querySelector('.r-actions').hidden = false;
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
        el('td', { 'data-test': 'access-served', text: a.servedBy }),
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
    $('ar-grant').addEventListener('change', onGrantChosen);
    $('read-form').addEventListener('submit', onReadRecords);
    $('cut-block').addEventListener('click', onCut);
    $('blocks-older').addEventListener('click', () => {
      if (state.blocksNext === null || state.blocksNext === undefined) return;
      state.blocksBefore.push(state.blocksNext);
      refreshBlocks();
    });
    $('blocks-newer').addEventListener('click', () => { state.blocksBefore.pop(); refreshBlocks(); });
    $('refresh').addEventListener('click', async () => { await refreshPatient(); toast('Up to date'); });
    $('ask-form').addEventListener('submit', onAskFind);
    $('ask-approve').addEventListener('click', onAskApprove);
    $('device-new').addEventListener('click', newKeyForThisBrowser);
  }

  async function start() {
    wire();
    onRoleChange();
    const r = await api('GET', '/api/me');
    state.me = r.ok ? whoFrom(r.data) : null;
    render();
  }
  document.addEventListener('DOMContentLoaded', start);
})();
