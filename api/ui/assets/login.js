// Sign-in: login and password, then the second step (or a remembered device, or a
// passkey). On success the token is POSTed to return_to (when the server accepted it) or
// kept for this tab and the account page opens.

import { gql, describeError } from './gql.js';
import { $, postBack, returnRefused, returnTo, say } from './page.js';
import { getAssertion, secondStep } from './second-step.js';
import { setToken } from './session.js';

const FACTOR_FIELDS = 'id type status label phoneNumber email lockedUntil';

const LOGIN = `mutation($login: String!, $password: String!, $device: String) {
  login(input: {login: $login, password: $password, deviceToken: $device}) {
    accessToken mfaRequired challenge { id expiresAt } factors { ${FACTOR_FIELDS} } } }`;
const SEND = `mutation($f: ID!, $c: ID) {
  challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id } webauthn { publicKey } } }`;
const COMPLETE = `mutation($c: ID!, $f: ID, $p: String, $r: String, $w: JSON, $remember: Boolean!) {
  completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p, recoveryCode: $r, webauthn: $w,
                        rememberDevice: $remember}) { factorResult accessToken deviceToken } }`;
const PASSKEY_START = `mutation($login: String) {
  startPasskeyLogin(input: {login: $login}) { challenge { id } webauthn { publicKey } } }`;
const PASSKEY_COMPLETE = `mutation($c: ID!, $w: JSON!) {
  completePasskeyLogin(input: {challengeId: $c, webauthn: $w}) { factorResult accessToken } }`;

/** Where a remembered device's token for this login is kept (this browser only). */
const deviceKey = (login) => 'tessera.device.' + login.trim().toLowerCase();

function storedDevice(login) {
  try {
    return localStorage.getItem(deviceKey(login));
  } catch (e) {
    return null;
  }
}

function storeDevice(login, token) {
  try {
    localStorage.setItem(deviceKey(login), token);
  } catch (e) {
    // Storage disabled: the next sign-in asks for the second factor again.
  }
}

const target = returnTo();
let conditional = null;
/** The token of a completed second step, for finish(). */
let answered = null;

function finish(token) {
  if (conditional) conditional.abort();
  $('password-form').hidden = true;
  $('second-step').hidden = true;
  if (target) {
    say('done', 'Signed in. Returning to the application…');
    postBack(target, { access_token: token });
  } else {
    setToken(token);
    say('done', 'Signed in.');
    location.assign('/ui/account');
  }
}

function restart(message) {
  $('second-step').hidden = true;
  $('password-form').hidden = false;
  $('password').value = '';
  say('page-error', message);
  $('password').focus();
}

async function signIn(event) {
  event.preventDefault();
  say('page-error', '');
  say('login-error', '');
  say('password-error', '');
  const login = $('login').value.trim();
  const password = $('password').value;
  if (!login) {
    say('login-error', 'Enter your login.');
    $('login').focus();
    return;
  }
  if (!password) {
    say('password-error', 'Enter your password.');
    $('password').focus();
    return;
  }
  $('sign-in').disabled = true;
  const device = storedDevice(login);
  const r = await gql(LOGIN, { login, password, device });
  $('sign-in').disabled = false;
  if (r.errors) {
    const e = r.errors[0];
    const field = e.extensions && e.extensions.code === 'UNAUTHENTICATED' ? 'password-error' : 'page-error';
    say(field, describeError(e));
    if (field === 'password-error') $('password').setAttribute('aria-invalid', 'true');
    return;
  }
  $('password').removeAttribute('aria-invalid');
  const p = r.data.login;
  if (p.accessToken) {
    finish(p.accessToken);
    return;
  }
  const challengeId = p.challenge.id;
  $('password-form').hidden = true;
  secondStep({
    factors: (p.factors || []).filter((f) => f.status === 'ACTIVE' || f.status === 'LOCKED_OUT'),
    send: async (f) => {
      const s = await gql(SEND, { f: f.id, c: challengeId });
      if (s.errors) return { error: s.errors[0] };
      return { webauthn: s.data.challengeFactor.webauthn };
    },
    answer: async (a) => {
      const c = await gql(COMPLETE, {
        c: challengeId,
        f: a.factorId || null,
        p: a.passCode || null,
        r: a.recoveryCode || null,
        w: a.webauthn || null,
        remember: !!a.rememberDevice,
      });
      if (c.errors) return { error: c.errors[0] };
      const done = c.data.completeLogin;
      if (done.factorResult === 'SUCCESS') {
        if (done.deviceToken) storeDevice(login, done.deviceToken);
        answered = done.accessToken;
      }
      return { factorResult: done.factorResult };
    },
    done: () => finish(answered),
    expired: (message) => restart(message),
  });
}

/** A passkey sign-in: modal (the button), or through the login field's autofill. */
async function passkey(mediation) {
  const started = await gql(PASSKEY_START, { login: null });
  if (started.errors) {
    if (!mediation) say('page-error', describeError(started.errors[0]));
    return;
  }
  const s = started.data.startPasskeyLogin;
  let webauthn;
  try {
    if (mediation) {
      conditional = new AbortController();
      // A mark for whoever watches the page (tests): the login field now offers passkeys.
      document.body.dataset.passkeyAutofill = 'waiting';
      webauthn = await getAssertion(s.webauthn.publicKey, { mediation, signal: conditional.signal });
    } else {
      webauthn = await getAssertion(s.webauthn.publicKey);
    }
  } catch (e) {
    if (!mediation) say('page-error', 'The passkey was not used. Try again, or sign in with your password.');
    return;
  }
  const c = await gql(PASSKEY_COMPLETE, { c: s.challenge.id, w: webauthn });
  if (c.errors) {
    say('page-error', describeError(c.errors[0]));
    return;
  }
  const done = c.data.completePasskeyLogin;
  if (done.factorResult === 'SUCCESS' && done.accessToken) {
    finish(done.accessToken);
  } else {
    say('page-error', done.factorResult === 'REJECTED'
      ? 'This passkey is not accepted (unknown, removed or locked). Sign in with your password.'
      : describeError(done.factorResult));
  }
}

async function start() {
  const refused = returnRefused();
  if (refused) {
    $('password-form').hidden = true;
    say('page-error', 'This sign-in link is not valid: ' + refused + '. Nothing will be sent anywhere; go back to the application and try again.');
    return;
  }
  $('password-form').addEventListener('submit', signIn);
  if (window.PublicKeyCredential) {
    const b = $('passkey-sign-in');
    b.hidden = false;
    b.addEventListener('click', () => {
      if (conditional) conditional.abort();
      conditional = null;
      passkey(null);
    });
    if (PublicKeyCredential.isConditionalMediationAvailable && (await PublicKeyCredential.isConditionalMediationAvailable())) {
      passkey('conditional');
    }
  }
  $('login').focus();
}

start();
