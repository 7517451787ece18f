// GraphQL over fetch for the hosted pages, and human messages for the API's answers.
// Same origin as Tessera: no CORS, no cookies; a user's token travels in Authorization.

/**
 * Runs one GraphQL document against /graphql.
 * @param {string} query
 * @param {object} [variables]
 * @param {string} [token] a user's access token or an API key
 * @returns {Promise<{data: any, errors: any[] | undefined}>} never throws: a network or
 *   HTTP failure comes back as an error with extensions.code NETWORK / HTTP_<status>.
 */
export async function gql(query, variables, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables: variables || {} }),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    return { data: null, errors: [{ message: String(e), extensions: { code: 'NETWORK' } }] };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!body || (!body.data && !body.errors)) {
    return {
      data: null,
      errors: [{ message: 'HTTP ' + response.status, extensions: { code: 'HTTP_' + response.status } }],
    };
  }
  return { data: body.data ?? null, errors: body.errors };
}

/** Seconds as "42 seconds" / "5 minutes" / "2 hours". */
export function humanSeconds(seconds) {
  const s = Math.max(0, Math.ceil(Number(seconds) || 0));
  if (s < 90) return s === 1 ? '1 second' : s + ' seconds';
  const m = Math.ceil(s / 60);
  if (m < 90) return m + ' minutes';
  const h = Math.ceil(m / 60);
  return h === 1 ? '1 hour' : h + ' hours';
}

const RESULTS = {
  SUCCESS: 'Confirmed.',
  REJECTED: 'That code is not right. Check it and try again.',
  PASSCODE_REPLAYED:
    'That code was already used. Wait for your app to show a new one, then enter it.',
  LOCKED_OUT:
    'Too many wrong codes: this method is locked for now. Try another method or wait a few minutes.',
  EXPIRED: 'This sign-in took too long and has expired. Start again.',
  CHALLENGE_REQUIRED: 'Send a code first.',
};

const REASONS = {
  LOGIN_THROTTLED: 'Too many failed sign-ins for this account.',
  RESEND_TOO_SOON: 'A code was sent a moment ago.',
  TOO_MANY_CODES: 'Too many codes were sent to this method.',
  INVALID_CREDENTIALS: 'The login or password is not right.',
  CHALLENGE_EXPIRED: 'This request has expired. Start again from the application.',
  CHALLENGE_COMPLETED: 'This request was already confirmed.',
  CHALLENGE_NOT_FOUND: 'This request does not exist (or has expired). Start again from the application.',
  USER_HARD_LOCKED:
    'Your second factor is locked after too many failures. Ask an administrator to unlock it.',
  HARD_LOCKED:
    'Your second factor is locked after too many failures. Ask an administrator to unlock it.',
  FACTOR_LOCKED_OUT: 'This method is locked after too many wrong codes. Try another one.',
  FACTOR_LOCKED: 'This method is locked after too many wrong codes. Try another one.',
  FACTOR_NOT_ACTIVE: 'This method is not active.',
  MALFORMED_PASS_CODE: 'Enter the code as digits only (spaces are fine).',
  MALFORMED_RECOVERY_CODE: 'A recovery code looks like 7QX2M-4KD9P.',
  REAUTHENTICATION_REQUIRED: 'Confirm it is you first (sign in again).',
  UNAUTHENTICATED: 'Your session has ended. Sign in again.',
  USER_DEACTIVATED: 'This account is deactivated.',
};

const CODES = {
  UNAUTHENTICATED: 'Your session has ended. Sign in again.',
  FORBIDDEN: 'You are not allowed to do that.',
  NOT_FOUND: 'Not found.',
  BAD_USER_INPUT: 'Some input is not valid.',
  CONFLICT: 'That cannot be done now (it changed meanwhile). Reload and try again.',
  RATE_LIMITED: 'Too many attempts.',
  INTERNAL: 'Something went wrong on the server. Try again in a moment.',
  NETWORK: 'Tessera cannot be reached. Check your connection and try again.',
};

/**
 * A human message for a proof outcome (a FactorResult string such as "REJECTED") or a
 * GraphQL error (extensions.code, reason and retryAfter).
 * @param {string | {message?: string, extensions?: {code?: string, reason?: string, retryAfter?: number}}} error
 * @returns {string}
 */
export function describeError(error) {
  if (error == null) return '';
  if (typeof error === 'string') return RESULTS[error] || REASONS[error] || CODES[error] || error;
  const x = error.extensions || {};
  let text = REASONS[x.reason] || CODES[x.code] || error.message || 'Something went wrong.';
  if (x.code === 'RATE_LIMITED' && x.retryAfter != null) {
    text += ' Try again in ' + humanSeconds(x.retryAfter) + '.';
  }
  if (x.code === 'BAD_USER_INPUT' && !REASONS[x.reason] && error.message) {
    text = error.message;
  }
  return text;
}
