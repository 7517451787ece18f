// What every hosted page needs: the server's decision about return_to, posting a result
// back to it, and small DOM helpers.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

function meta(name) {
  const m = document.querySelector('meta[name="' + name + '"]');
  return m ? m.content : null;
}

/** The URL the server accepted as return_to (its origin is listed), or null. */
export function returnTo() {
  return meta('tessera-return-to');
}

/** Why the server refused return_to, or null. */
export function returnRefused() {
  return meta('tessera-return-refused');
}

/** A token the application handed to this page by form POST (step-up), or null. */
export function handedToken() {
  return meta('tessera-token');
}

/**
 * POSTs `fields` to `url` as application/x-www-form-urlencoded, by a form this script builds
 * and submits (the page's CSP form-action allows that origin only). Nothing goes in the URL.
 */
export function postBack(url, fields) {
  const form = document.createElement('form');
  form.method = 'post';
  form.action = url;
  form.enctype = 'application/x-www-form-urlencoded';
  form.hidden = true;
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}

/** Shows `text` in the element (an alert region), or hides it when empty. */
export function say(id, text) {
  const el = $(id);
  if (el) el.textContent = text || '';
}
