// Starts GraphiQL against this Tessera. Everything it loads comes from /graphql/assets/.
(function () {
  'use strict';
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', function (e) {
    window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
  });

  // A key may be handed over as #key=… (never sent to any server) or ?key=…; either is
  // moved into the headers editor and removed from the address bar and history.
  var url = new URL(window.location.href);
  var fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  var key = fragment.get('key') || url.searchParams.get('key');
  if (fragment.has('key') || url.searchParams.has('key')) {
    url.searchParams.delete('key');
    url.hash = '';
    window.history.replaceState(null, '', url.pathname + url.search);
  }
  var headers = {
    Authorization: 'Bearer ' + (key || '<an API key (tsk_…) or an access token from login>'),
  };

  var defaultQuery = [
    '# Tessera GraphQL. Put an API key or access token in the Authorization header',
    '# (Headers tab below): introspection, autocomplete and the docs need it.',
    '#',
    '# An example: the first users and their factors.',
    'query Users {',
    '  users(first: 10) {',
    '    edges {',
    '      node {',
    '        id',
    '        login',
    '        factors { id type status lastVerifiedAt }',
    '      }',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');

  var fetcher = GraphiQL.createFetcher({ url: '/graphql' });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      headers: JSON.stringify(headers, null, 2),
      // Tokens stay out of the browser's storage.
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: 'headers',
    })
  );
})();
