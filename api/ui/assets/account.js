// The account security page: the signed-in user's factors, adding (authenticator app, phone,
// e-mail, passkey) and removing them, recovery codes, remembered devices and recent activity.
// Every call is the public GraphQL API with the user's own token; a change the API answers
// with REAUTHENTICATION_REQUIRED runs the step-up it asks for, inline, then is retried.

import { gql, describeError } from './gql.js';
import { getToken, clearToken } from './session.js';

const token = getToken();
if (!token) location.replace('/ui/login');

const $ = (id) => document.getElementById(id);
const FACTOR_FIELDS = 'id type status label lastVerifiedAt createdAt';
const ME = `{ me { id login displayName recoveryCodesRemaining
  factors { ${FACTOR_FIELDS} } trustedDevices { id label createdAt lastUsedAt } } }`;
const ACTIVITY = `query($a: String) { me { activity(first: 20, after: $a) {
  pageInfo { hasNextPage endCursor }
  edges { node { at kind result reason detail factorType factorLabel ipAddress userAgent } } } } }`;
const ENROLL = `mutation($i: EnrollFactorInput!) { enrollFactor(input: $i) {
  factor { id } totp { secretBase32 otpauthUri qrCodePng } challenge { id } webauthn { publicKey } } }`;
const ACTIVATE = `mutation($i: ActivateFactorInput!) { activateFactor(input: $i) {
  factorResult recoveryCodes factor { id status } } }`;

const TYPES = { TOTP: 'Authenticator app', SMS: 'Phone (SMS)', EMAIL: 'E-mail', WEBAUTHN: 'Passkey' };
const STATUSES = {
  ACTIVE: 'Active', PENDING_ACTIVATION: 'Not confirmed yet', LOCKED_OUT: 'Locked for now',
  EXPIRED: 'Expired', REMOVED: 'Removed',
};

let me = null;
let freshProof = null; // a completed step-up, named by account changes while it is fresh

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : 'Never';
}

function say(text, isError) {
  $('page-error').textContent = isError ? text : '';
  $('page-notice').textContent = isError ? '' : text;
}

function errorOf(r) {
  return r && r.errors && r.errors[0];
}

function reasonOf(r) {
  const e = errorOf(r);
  return e && e.extensions ? e.extensions.reason || e.extensions.code : null;
}

/** Marks `input` invalid with `text` in its described-by error element (or clears it). */
function fieldError(input, text) {
  const el = $(input.getAttribute('aria-describedby'));
  el.textContent = text || '';
  if (text) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  } else {
    input.removeAttribute('aria-invalid');
  }
}

function signedOut() {
  clearToken();
  location.replace('/ui/login');
}

async function call(query, variables) {
  const r = await gql(query, variables, token);
  if (reasonOf(r) === 'UNAUTHENTICATED') signedOut();
  return r;
}

// ---- step-up ---------------------------------------------------------------------------

/** Runs `run(stepUpChallengeId)`; if the API asks for a fresh proof, asks the user for one
 *  inline and runs it again with the completed step-up. Null if the user cancels. */
async function withProof(run) {
  let r = await run(freshProof);
  if (reasonOf(r) === 'REAUTHENTICATION_REQUIRED') {
    freshProof = await stepUp();
    if (!freshProof) return null;
    r = await run(freshProof);
  }
  return r;
}

let stepUpState = null;

function stepUp() {
  return new Promise((resolve) => {
    const select = $('stepup-factor');
    select.replaceChildren();
    for (const f of me.factors.filter((f) => f.status === 'ACTIVE')) {
      const o = new Option(`${TYPES[f.type] || f.type}${f.label ? ' · ' + f.label : ''}`, f.id);
      o.dataset.type = f.type;
      select.add(o);
    }
    const recovery = new Option('A recovery code', 'recovery');
    recovery.dataset.type = 'RECOVERY';
    select.add(recovery);
    stepUpState = { resolve, challengeId: null };
    $('stepup').hidden = false;
    fieldError($('stepup-code'), '');
    $('stepup-code').value = '';
    methodChanged();
    $('stepup-title').focus();
  });
}

function stepUpType() {
  const o = $('stepup-factor').selectedOptions[0];
  return o ? o.dataset.type : 'RECOVERY';
}

function methodChanged() {
  const type = stepUpType();
  $('stepup-send').hidden = !(type === 'SMS' || type === 'EMAIL');
  $('stepup-code-row').hidden = type === 'WEBAUTHN';
  $('stepup-code-label').textContent = type === 'RECOVERY' ? 'Recovery code' : 'Code';
  $('stepup-code').setAttribute('inputmode', type === 'RECOVERY' ? 'text' : 'numeric');
}

async function challengeId() {
  if (stepUpState.challengeId) return stepUpState.challengeId;
  const r = await call(
    'mutation($i: StartStepUpInput!) { startStepUp(input: $i) { challenge { id } } }',
    { i: { userId: me.id, state: { display: 'Change your account security settings' } } },
  );
  if (!r.data) throw new Error(describeError(errorOf(r)));
  stepUpState.challengeId = r.data.startStepUp.challenge.id;
  return stepUpState.challengeId;
}

function endStepUp(id) {
  $('stepup').hidden = true;
  const s = stepUpState;
  stepUpState = null;
  if (s) s.resolve(id);
}

async function sendStepUpCode() {
  const input = $('stepup-code');
  try {
    const r = await call(
      'mutation($i: ChallengeFactorInput!) { challengeFactor(input: $i) { challenge { id } } }',
      { i: { factorId: $('stepup-factor').value, challengeId: await challengeId() } },
    );
    fieldError(input, r.data ? '' : describeError(errorOf(r)));
    if (r.data) say('Code sent.');
  } catch (e) {
    fieldError(input, e.message);
  }
}

async function confirmStepUp(event) {
  event.preventDefault();
  const input = $('stepup-code');
  const type = stepUpType();
  const factorId = $('stepup-factor').value;
  try {
    const id = await challengeId();
    const i = { challengeId: id };
    if (type === 'RECOVERY') {
      i.recoveryCode = input.value.trim();
    } else if (type === 'WEBAUTHN') {
      const c = await call(
        'mutation($i: ChallengeFactorInput!) { challengeFactor(input: $i) { webauthn { publicKey } } }',
        { i: { factorId, challengeId: id } },
      );
      if (!c.data) throw new Error(describeError(errorOf(c)));
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(
        c.data.challengeFactor.webauthn.publicKey);
      const assertion = await navigator.credentials.get({ publicKey });
      i.factorId = factorId;
      i.webauthn = assertion.toJSON();
    } else {
      i.factorId = factorId;
      i.passCode = input.value.replace(/\s+/g, '');
    }
    const r = await call(
      'mutation($i: CompleteStepUpInput!) { completeStepUp(input: $i) { factorResult } }', { i });
    if (!r.data) throw new Error(describeError(errorOf(r)));
    const result = r.data.completeStepUp.factorResult;
    if (result === 'SUCCESS') {
      fieldError(input, '');
      endStepUp(id);
      return;
    }
    if (result === 'EXPIRED') stepUpState.challengeId = null;
    fieldError(input, describeError(result));
  } catch (e) {
    fieldError(input, e.message || String(e));
  }
}

// ---- factors ---------------------------------------------------------------------------

function renderFactors() {
  const body = $('factors').tBodies[0];
  body.replaceChildren();
  const shown = me.factors.filter((f) => f.status !== 'REMOVED' && f.status !== 'EXPIRED');
  $('factors-empty').hidden = shown.length > 0;
  for (const f of shown) {
    const tr = body.insertRow();
    tr.dataset.factorId = f.id;
    tr.dataset.type = f.type;
    const cells = [TYPES[f.type] || f.type, f.label || '—', when(f.lastVerifiedAt),
      STATUSES[f.status] || f.status];
    const heads = ['Method', 'Name', 'Last used', 'Status'];
    cells.forEach((text, n) => {
      const td = tr.insertCell();
      td.dataset.label = heads[n];
      td.textContent = text;
    });
    const td = tr.insertCell();
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'secondary remove';
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove ${TYPES[f.type] || f.type}${f.label ? ' ' + f.label : ''}`);
    // A second click confirms: no modal dialog, and the keyboard works the same.
    remove.addEventListener('click', () => {
      if (remove.dataset.armed !== 'true') {
        remove.dataset.armed = 'true';
        remove.textContent = 'Remove it for good';
        return;
      }
      removeFactor(f);
    });
    td.append(remove);
  }
}

async function removeFactor(f) {
  say('');
  const r = await withProof((proof) => call(
    'mutation($i: RemoveFactorInput!) { removeFactorV2(input: $i) { factor { id status } } }',
    { i: { factorId: f.id, stepUpChallengeId: proof } }));
  if (!r) return;
  if (reasonOf(r) === 'LAST_REQUIRED_FACTOR') {
    return say('This is your last way to confirm it is you, and signing in requires one. '
      + 'Add another method first, then remove this one.', true);
  }
  if (!r.data) return say(describeError(errorOf(r)), true);
  await load();
  say('Removed.');
}

function closePanels() {
  for (const id of ['totp-panel', 'oob-panel', 'passkey-panel']) $(id).hidden = true;
}

function open(panelId, titleId) {
  closePanels();
  $(panelId).hidden = false;
  $(titleId).focus();
}

let pending = null; // the factor being added: { id, type }

async function enroll(input) {
  const r = await withProof((proof) => call(ENROLL, { i: { ...input, userId: me.id, stepUpChallengeId: proof } }));
  if (!r) return null;
  if (!r.data) {
    say(describeError(errorOf(r)), true);
    return null;
  }
  return r.data.enrollFactor;
}

async function activate(input, field) {
  const r = await withProof((proof) => call(ACTIVATE, { i: { ...input, stepUpChallengeId: proof } }));
  if (!r) return false;
  if (!r.data) {
    fieldError(field, describeError(errorOf(r)));
    return false;
  }
  const a = r.data.activateFactor;
  if (a.factorResult !== 'SUCCESS') {
    fieldError(field, describeError(a.factorResult));
    return false;
  }
  fieldError(field, '');
  closePanels();
  pending = null;
  if (a.recoveryCodes) showCodes(a.recoveryCodes);
  await load();
  say('Added.');
  return true;
}

async function addTotp() {
  say('');
  const e = await enroll({ type: 'TOTP', label: 'Authenticator app' });
  if (!e) return;
  pending = { id: e.factor.id, type: 'TOTP' };
  $('totp-qr').src = e.totp.qrCodePng;
  $('totp-secret').textContent = e.totp.secretBase32;
  $('totp-code').value = '';
  fieldError($('totp-code'), '');
  open('totp-panel', 'totp-title');
}

function addOob(type) {
  say('');
  pending = { id: null, type };
  const input = $('oob-destination');
  const email = type === 'EMAIL';
  $('oob-title').textContent = email ? 'Add an e-mail address' : 'Add a phone';
  $('oob-destination-label').textContent = email ? 'E-mail address' : 'Phone number (with country code, e.g. +1 415 555 0100)';
  input.type = email ? 'email' : 'tel';
  input.autocomplete = email ? 'email' : 'tel';
  input.value = '';
  fieldError(input, '');
  $('oob-code-row').hidden = true;
  $('oob-send').textContent = 'Send a code';
  open('oob-panel', 'oob-title');
}

async function sendOob() {
  const input = $('oob-destination');
  if (pending.id) {
    const r = await call(
      'mutation($i: ChallengeFactorInput!) { challengeFactor(input: $i) { challenge { id } } }',
      { i: { factorId: pending.id } });
    fieldError(input, r.data ? '' : describeError(errorOf(r)));
    if (r.data) say('Code sent again.');
    return;
  }
  const value = input.value.trim();
  if (!value) return fieldError(input, 'Enter where the code should go.');
  const destination = pending.type === 'EMAIL' ? { email: value } : { phoneNumber: value.replace(/[\s()-]/g, '') };
  const r = await withProof((proof) => call(ENROLL, {
    i: { type: pending.type, userId: me.id, label: value, stepUpChallengeId: proof, ...destination } }));
  if (!r) return;
  if (!r.data) return fieldError(input, describeError(errorOf(r)));
  fieldError(input, '');
  pending.id = r.data.enrollFactor.factor.id;
  $('oob-code-row').hidden = false;
  $('oob-send').textContent = 'Send the code again';
  say('Code sent.');
  $('oob-code').focus();
}

function addPasskey() {
  say('');
  fieldError($('passkey-label'), '');
  open('passkey-panel', 'passkey-title');
}

async function createPasskey(event) {
  event.preventDefault();
  const field = $('passkey-label');
  const e = await enroll({ type: 'WEBAUTHN', label: field.value.trim() || 'Passkey' });
  if (!e) return;
  try {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(e.webauthn.publicKey);
    const credential = await navigator.credentials.create({ publicKey });
    await activate({ factorId: e.factor.id, webauthn: credential.toJSON() }, field);
  } catch (err) {
    fieldError(field, err.name === 'NotAllowedError'
      ? 'The passkey was not created (cancelled or timed out). Try again.'
      : String(err.message || err));
  }
}

// ---- recovery codes --------------------------------------------------------------------

let codes = [];

function showCodes(list) {
  codes = list;
  const ol = $('recovery-codes');
  ol.replaceChildren(...list.map((c) => {
    const li = document.createElement('li');
    li.textContent = c;
    return li;
  }));
  $('recovery-shown').hidden = false;
  $('recovery-note').focus();
}

function hideCodes() {
  codes = [];
  $('recovery-codes').replaceChildren();
  $('recovery-shown').hidden = true;
}

async function regenerate() {
  say('');
  const r = await withProof((proof) => call(
    'mutation($i: UserRefInput!) { regenerateRecoveryCodes(input: $i) { recoveryCodes } }',
    { i: { userId: me.id, stepUpChallengeId: proof } }));
  if (!r) return;
  if (!r.data) return say(describeError(errorOf(r)), true);
  showCodes(r.data.regenerateRecoveryCodes.recoveryCodes);
  await load();
}

function codesText() {
  return `Tessera recovery codes for ${me.login}\n\n${codes.join('\n')}\n`;
}

// ---- devices and activity --------------------------------------------------------------

function renderDevices() {
  const ul = $('devices');
  ul.replaceChildren();
  const devices = me.trustedDevices;
  $('devices-empty').hidden = devices.length > 0;
  $('revoke-all').hidden = devices.length < 2;
  for (const d of devices) {
    const li = document.createElement('li');
    li.dataset.deviceId = d.id;
    const text = document.createElement('span');
    text.textContent = `${d.label || 'A device'} · remembered ${when(d.createdAt)} · last used ${when(d.lastUsedAt)}`;
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'secondary revoke';
    b.textContent = 'Forget';
    b.setAttribute('aria-label', `Forget ${d.label || 'this device'}`);
    b.addEventListener('click', () => revoke([d.id]));
    li.append(text, b);
    ul.append(li);
  }
}

async function revoke(ids) {
  for (const id of ids) {
    const r = await call(
      'mutation($i: RevokeTrustedDeviceInput!) { revokeTrustedDevice(input: $i) { trustedDevice { id } } }',
      { i: { id } });
    if (!r.data) return say(describeError(errorOf(r)), true);
  }
  await load();
  say(ids.length > 1 ? 'Every device is forgotten.' : 'Device forgotten.');
}

let activityAfter = null;

async function loadActivity(more) {
  const r = await call(ACTIVITY, { a: more ? activityAfter : null });
  if (!r.data || !r.data.me) return say(describeError(errorOf(r)), true);
  const page = r.data.me.activity;
  const body = $('activity').tBodies[0];
  if (!more) body.replaceChildren();
  for (const { node: n } of page.edges) {
    const tr = body.insertRow();
    tr.className = 'result-' + n.result.toLowerCase();
    const what = n.kind + (n.reason ? ` (${n.reason.toLowerCase().replace(/_/g, ' ')})` : '') +
      (n.detail ? ` — ${n.detail}` : '');
    const method = n.factorType ? `${TYPES[n.factorType] || n.factorType}${n.factorLabel ? ' · ' + n.factorLabel : ''}` : '';
    const from = [n.ipAddress, n.userAgent].filter(Boolean).join(' · ');
    [[when(n.at), 'When'], [what, 'What'], [method, 'Method'], [from, 'From']].forEach(([t, h]) => {
      const td = tr.insertCell();
      td.dataset.label = h;
      td.textContent = t;
    });
  }
  activityAfter = page.pageInfo.endCursor;
  $('activity-more').hidden = !page.pageInfo.hasNextPage;
}

// ---- page ------------------------------------------------------------------------------

async function load() {
  $('main').setAttribute('aria-busy', 'true');
  const r = await call(ME);
  if (!r.data || !r.data.me) {
    if (r.data && r.data.me === null) return signedOut();
    return say(describeError(errorOf(r)), true);
  }
  me = r.data.me;
  $('who').textContent = me.displayName || me.login;
  const n = me.recoveryCodesRemaining;
  $('recovery-remaining').textContent = n === 1 ? '1 code left.' : `${n} codes left.`;
  renderFactors();
  renderDevices();
  await loadActivity(false);
  $('main').setAttribute('aria-busy', 'false');
}

function wire() {
  $('sign-out').addEventListener('click', signedOut);
  $('add-totp').addEventListener('click', addTotp);
  $('add-sms').addEventListener('click', () => addOob('SMS'));
  $('add-email').addEventListener('click', () => addOob('EMAIL'));
  $('add-passkey').addEventListener('click', addPasskey);
  for (const b of document.querySelectorAll('[data-cancel]')) {
    b.addEventListener('click', () => { pending = null; closePanels(); });
  }
  $('totp-panel').addEventListener('submit', (e) => {
    e.preventDefault();
    activate({ factorId: pending.id, passCode: $('totp-code').value.replace(/\s+/g, '') }, $('totp-code'));
  });
  $('oob-send').addEventListener('click', sendOob);
  $('oob-panel').addEventListener('submit', (e) => {
    e.preventDefault();
    activate({ factorId: pending.id, passCode: $('oob-code').value.replace(/\s+/g, '') }, $('oob-code'));
  });
  $('passkey-panel').addEventListener('submit', createPasskey);
  $('stepup-factor').addEventListener('change', methodChanged);
  $('stepup-send').addEventListener('click', sendStepUpCode);
  $('stepup-form').addEventListener('submit', confirmStepUp);
  $('stepup-cancel').addEventListener('click', () => endStepUp(null));
  $('regenerate').addEventListener('click', regenerate);
  $('recovery-done').addEventListener('click', hideCodes);
  $('recovery-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(codesText());
      say('Copied.');
    } catch (e) {
      say('Copying is not allowed here: select the codes and copy them.', true);
    }
  });
  $('recovery-download').addEventListener('click', () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([codesText()], { type: 'text/plain' }));
    a.download = 'tessera-recovery-codes.txt';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  $('recovery-print').addEventListener('click', () => window.print());
  $('revoke-all').addEventListener('click', () => revoke(me.trustedDevices.map((d) => d.id)));
  $('activity-more').addEventListener('click', () => loadActivity(true));
}

if (token) {
  wire();
  load();
}
