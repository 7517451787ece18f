// The signed-in user's access token, for this tab only (sessionStorage: gone when the tab
// closes, never sent anywhere by the browser on its own).

const KEY = 'tessera.token';

/** @returns {string | null} */
export function getToken() {
  try {
    return sessionStorage.getItem(KEY);
  } catch (e) {
    return null;
  }
}

/** @param {string} token */
export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function clearToken() {
  try {
    sessionStorage.removeItem(KEY);
  } catch (e) {
    // Storage disabled: nothing was stored.
  }
}
