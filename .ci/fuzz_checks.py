"""Schemathesis checks for Tessera: a typed GraphQL error (BAD_USER_INPUT, NOT_FOUND, ...) is
an answer, not a failure; a 5xx or an INTERNAL error is. Loaded by .ci/run through
SCHEMATHESIS_HOOKS."""

import schemathesis


@schemathesis.check
def no_server_fault(ctx, response, case):
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
    if '"INTERNAL"' in response.text:
        raise AssertionError(f"INTERNAL error: {response.text[:300]}")
    return None
