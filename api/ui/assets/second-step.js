// The second step shared by sign-in and step-up: choose one of the user's factors (TOTP
// code, SMS or e-mail code with resend, passkey) or a recovery code, and answer the
// challenge with it. The page supplies how to send a code and how to answer.

import { describeError, humanSeconds } from './gql.js';
import { $, say } from './page.js';

const NAMES = {
  TOTP: 'Authenticator app',
  SMS: 'Text message',
  EMAIL: 'E-mail',
  WEBAUTHN: 'Passkey or security key',
};

/** Seconds the resend button waits after a code was sent. */
const RESEND_SECONDS = 30;

function describeFactor(f) {
  const where = f.phoneNumber || f.email || '';
  const label = f.label && f.label !== where ? f.label : '';
  return { name: NAMES[f.type] || f.type, detail: [label, where].filter(Boolean).join(' · ') };
}

/** base64url → ArrayBuffer, for browsers without the WebAuthn JSON helpers. */
function fromB64u(s) {
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out.buffer;
}

/** `navigator.credentials.get` with options in the WebAuthn JSON form; the assertion as JSON. */
export async function getAssertion(optionsJSON, extra) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON
    ? PublicKeyCredential.parseRequestOptionsFromJSON(optionsJSON)
    : {
        ...optionsJSON,
        challenge: fromB64u(optionsJSON.challenge),
        allowCredentials: (optionsJSON.allowCredentials || []).map((c) => ({ ...c, id: fromB64u(c.id) })),
      };
  const credential = await navigator.credentials.get({ publicKey, ...(extra || {}) });
  return credential.toJSON();
}

/**
 * Runs the second step in the page's `#second-step` section.
 * @param {object} o
 * @param {Array} o.factors the user's factors that can answer (ACTIVE), or could but are
 *   locked for now (LOCKED_OUT: shown, not offered)
 * @param {(factor) => Promise<{webauthn?: any, error?: any}>} o.send sends a code (SMS,
 *   e-mail) or fetches the request options (passkey) for this challenge
 * @param {(answer: {factorId?, passCode?, recoveryCode?, webauthn?, rememberDevice}) =>
 *   Promise<{factorResult?: string, error?: any}>} o.answer answers the challenge
 * @param {() => void} o.done called after SUCCESS
 * @param {() => void} o.expired called when the challenge can no longer be answered
 */
export function secondStep(o) {
  const section = $('second-step');
  const choices = $('factor-choices');
  const codeForm = $('code-form');
  const recoveryForm = $('recovery-form');
  const other = $('other-method');
  let current = null;
  let timer = null;

  section.hidden = false;
  choices.replaceChildren();
  for (const f of o.factors) {
    const { name, detail } = describeFactor(f);
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.factorType = f.type;
    b.dataset.factorId = f.id;
    const strong = document.createElement('strong');
    strong.textContent = name;
    b.append(strong);
    if (detail) {
      const span = document.createElement('span');
      span.className = 'muted';
      span.textContent = detail;
      b.append(span);
    }
    if (f.status === 'LOCKED_OUT') {
      // Listed, so the user knows why it is not offered; answering it would not be checked.
      b.disabled = true;
      const span = document.createElement('span');
      span.className = 'muted';
      const until = f.lockedUntil ? new Date(f.lockedUntil) : null;
      span.textContent = 'Locked after too many wrong codes' +
        (until ? ' until ' + until.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '') + '.';
      b.append(document.createElement('br'), span);
    }
    b.addEventListener('click', () => choose(f));
    li.append(b);
    choices.append(li);
  }
  const li = document.createElement('li');
  const rb = document.createElement('button');
  rb.type = 'button';
  rb.id = 'use-recovery';
  rb.dataset.factorType = 'RECOVERY';
  const rs = document.createElement('strong');
  rs.textContent = 'Recovery code';
  rb.append(rs);
  rb.addEventListener('click', chooseRecovery);
  li.append(rb);
  choices.append(li);

  function showChoices() {
    stopCountdown();
    current = null;
    codeForm.hidden = true;
    recoveryForm.hidden = true;
    other.hidden = true;
    $('factor-list').hidden = false;
    say('code-error', '');
    say('recovery-error', '');
  }

  function stopCountdown() {
    if (timer) clearInterval(timer);
    timer = null;
    say('countdown', '');
  }

  function countdown(seconds) {
    stopCountdown();
    const resend = $('resend');
    let left = seconds;
    resend.disabled = true;
    const tick = () => {
      if (left <= 0) {
        stopCountdown();
        resend.disabled = false;
        return;
      }
      say('countdown', 'You can ask for a new code in ' + humanSeconds(left) + '.');
      left -= 1;
    };
    tick();
    timer = setInterval(tick, 1000);
  }

  async function send(f) {
    say('page-error', '');
    const r = await o.send(f);
    if (r.error) {
      const x = r.error.extensions || {};
      if (x.reason === 'CHALLENGE_EXPIRED' || x.reason === 'CHALLENGE_COMPLETED' || x.reason === 'CHALLENGE_NOT_FOUND') {
        o.expired(describeError(r.error));
        return null;
      }
      say('code-error', describeError(r.error));
      if (x.code === 'RATE_LIMITED' && x.retryAfter) countdown(x.retryAfter);
      return null;
    }
    return r;
  }

  async function choose(f) {
    current = f;
    $('factor-list').hidden = true;
    other.hidden = false;
    recoveryForm.hidden = true;
    say('code-error', '');
    if (f.type === 'WEBAUTHN') {
      codeForm.hidden = true;
      say('passkey-status', 'Follow your browser to use your passkey…');
      const r = await send(f);
      if (!r) return;
      let webauthn;
      try {
        webauthn = await getAssertion(r.webauthn.publicKey);
      } catch (e) {
        say('passkey-status', '');
        say('page-error', 'The passkey was not used (' + (e && e.name ? e.name : e) + '). Try again or choose another method.');
        return;
      }
      say('passkey-status', '');
      await submit({ factorId: f.id, webauthn });
      return;
    }
    const { name, detail } = describeFactor(f);
    $('code-label').textContent = f.type === 'TOTP' ? 'Code from your authenticator app' : 'Code we sent you';
    $('code-hint').textContent =
      f.type === 'TOTP' ? 'Open your app and enter the 6-digit code it shows.' : 'Sent to ' + (detail || name) + '. It is valid for 5 minutes.';
    $('code').value = '';
    $('resend').hidden = f.type === 'TOTP';
    codeForm.hidden = false;
    $('code').focus();
    if (f.type === 'SMS' || f.type === 'EMAIL') {
      const r = await send(f);
      if (r) countdown(RESEND_SECONDS);
    }
  }

  function chooseRecovery() {
    current = null;
    $('factor-list').hidden = true;
    codeForm.hidden = true;
    other.hidden = false;
    recoveryForm.hidden = false;
    $('recovery-code').value = '';
    $('recovery-code').focus();
  }

  async function submit(answer, field) {
    const errorId = field || 'code-error';
    say(errorId, '');
    say('page-error', '');
    const remember = $('remember');
    answer.rememberDevice = !!(remember && remember.checked);
    section.setAttribute('aria-busy', 'true');
    const r = await o.answer(answer);
    section.removeAttribute('aria-busy');
    if (r.error) {
      const x = r.error.extensions || {};
      if (x.reason === 'CHALLENGE_EXPIRED' || x.reason === 'CHALLENGE_COMPLETED' || x.reason === 'CHALLENGE_NOT_FOUND') {
        o.expired(describeError(r.error));
      } else {
        say(errorId, describeError(r.error));
      }
      return;
    }
    const result = r.factorResult;
    if (result === 'SUCCESS') {
      stopCountdown();
      o.done();
      return;
    }
    if (result === 'EXPIRED') {
      o.expired(describeError('EXPIRED'));
      return;
    }
    const message = answer.recoveryCode && result === 'REJECTED'
      ? 'That recovery code is not right, or was already used.'
      : describeError(result);
    if (result === 'LOCKED_OUT') {
      showChoices();
      say('page-error', message);
      return;
    }
    if (answer.webauthn) {
      say('page-error', message);
      return;
    }
    say(errorId, message);
    const input = $(field === 'recovery-error' ? 'recovery-code' : 'code');
    input.setAttribute('aria-invalid', 'true');
    input.select();
  }

  codeForm.onsubmit = (e) => {
    e.preventDefault();
    const code = $('code').value.replace(/\s+/g, '');
    if (!/^\d{6,8}$/.test(code)) {
      say('code-error', 'Enter the 6-digit code.');
      $('code').setAttribute('aria-invalid', 'true');
      return;
    }
    $('code').removeAttribute('aria-invalid');
    submit({ factorId: current.id, passCode: code });
  };
  recoveryForm.onsubmit = (e) => {
    e.preventDefault();
    const code = $('recovery-code').value.trim();
    if (!code) {
      say('recovery-error', 'Enter one of your recovery codes.');
      return;
    }
    submit({ recoveryCode: code }, 'recovery-error');
  };
  $('resend').onclick = async () => {
    if (!current) return;
    const r = await send(current);
    if (r) {
      countdown(RESEND_SECONDS);
      say('code-error', '');
      $('code-hint').textContent = 'A new code is on its way.';
    }
  };
  other.onclick = showChoices;

  showChoices();
  const active = o.factors.filter((f) => f.status === 'ACTIVE');
  if (o.factors.length === 1 && active.length === 1 && active[0].type === 'TOTP') choose(active[0]);
}
