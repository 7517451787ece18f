"""Schemathesis checks for Tessera: a typed GraphQL error (BAD_USER_INPUT, NOT_FOUND, ...) is
an answer, not a failure; a 5xx or an INTERNAL error is. Loaded by .ci/run through
SCHEMATHESIS_HOOKS."""

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes


@schemathesis.check
def no_server_fault(ctx, response, case):
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
    if '"INTERNAL"' in response.text:
        raise AssertionError(f"INTERNAL error: {response.text[:300]}")
    return None


# `JSON` (WebAuthn options and responses) is a custom scalar: any JSON value, written as a
# GraphQL literal (strings, numbers, booleans, null, lists and objects, nested a few levels).
def _json_object(pairs):
    import graphql

    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v)
            for k, v in pairs.items()
        ]
    )


_json_leaf = st.one_of(
    st.text(max_size=64).map(nodes.String),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    st.booleans().map(nodes.Boolean),
    st.just(nodes.Null),
)
schemathesis.graphql.scalar(
    "JSON",
    st.recursive(
        _json_leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(nodes.List),
            st.dictionaries(
                st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True), inner, max_size=4
            ).map(_json_object),
        ),
        max_leaves=12,
    ),
)
