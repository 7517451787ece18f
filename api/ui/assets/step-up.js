// Step-up: shows what the application asks the user to confirm (the challenge's display
// text), takes any of the user's factors or a recovery code, and POSTs challenge_id and
// factor_result to return_to (when the server accepted it).
//
// The page acts with the user's own access token: the one the application handed over by
// form POST to this page, or the one this tab holds from a sign-in on these pages.

import { gql, describeError } from './gql.js';
import { $, handedToken, postBack, returnRefused, returnTo, say } from './page.js';
import { secondStep } from './second-step.js';
import { getToken } from './session.js';

const LOAD = `query($c: ID!) {
  challenge(id: $c) { id status purpose expiresAt display }
  me { factors { id type status label phoneNumber email lockedUntil } } }`;
const SEND = `mutation($f: ID!, $c: ID) {
  challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id } webauthn { publicKey } } }`;
const COMPLETE = `mutation($c: ID!, $f: ID, $p: String, $r: String, $w: JSON) {
  completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p, recoveryCode: $r, webauthn: $w}) {
    factorResult } }`;

const challengeId = decodeURIComponent(location.pathname.split('/').pop());
const target = returnTo();

function stop(message) {
  $('second-step').hidden = true;
  say('page-error', message);
}

async function start() {
  const refused = returnRefused();
  if (refused) {
    stop('This link is not valid: ' + refused + '. Nothing will be sent anywhere; go back to the application.');
    return;
  }
  const token = handedToken() || getToken();
  if (!token) {
    stop('Sign in first: this page needs your session. Go back to the application and try again.');
    return;
  }
  const r = await gql(LOAD, { c: challengeId }, token);
  if (r.errors) {
    stop(describeError(r.errors[0]));
    return;
  }
  const c = r.data.challenge;
  if (!c || c.purpose !== 'STEP_UP') {
    stop('This request does not exist. Go back to the application and try again.');
    return;
  }
  if (c.status === 'COMPLETED') {
    stop('This request was already confirmed.');
    return;
  }
  if (c.status !== 'ISSUED') {
    stop('This request has expired. Go back to the application and try again.');
    return;
  }
  if (c.display) {
    $('display').textContent = c.display;
    $('what').hidden = false;
  }
  secondStep({
    factors: r.data.me.factors.filter((f) => f.status === 'ACTIVE' || f.status === 'LOCKED_OUT'),
    send: async (f) => {
      const s = await gql(SEND, { f: f.id, c: challengeId }, token);
      if (s.errors) return { error: s.errors[0] };
      return { webauthn: s.data.challengeFactor.webauthn };
    },
    answer: async (a) => {
      const d = await gql(COMPLETE, {
        c: challengeId,
        f: a.factorId || null,
        p: a.passCode || null,
        r: a.recoveryCode || null,
        w: a.webauthn || null,
      }, token);
      if (d.errors) return { error: d.errors[0] };
      return { factorResult: d.data.completeStepUp.factorResult };
    },
    done: () => {
      $('second-step').hidden = true;
      if (target) {
        say('done', 'Confirmed. Returning to the application…');
        postBack(target, { challenge_id: challengeId, factor_result: 'SUCCESS' });
      } else {
        say('done', 'Confirmed. You can close this page and go back to the application.');
      }
    },
    expired: (message) => stop(message),
  });
}

start();
