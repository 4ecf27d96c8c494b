// Prism's GraphiQL page: sign-in with a bearer token, kept in this tab's sessionStorage (never
// a cookie), sent as Authorization by the fetcher (and in graphql-transport-ws's
// connection_init for subscriptions); GraphiQL with the explorer plugin. Loaded from Prism
// itself (see prism/web/assets.py): the page allows no inline script.
(function () {
  "use strict";

  var KEY = "prism.graphiql.bearer";
  var WHO = "query PrismGraphiQLViewer { viewer { scopes user { email } } }";
  var DEFAULT_QUERY = [
    "# Sign in above with a bearer token, then run this",
    "# query (Ctrl-Enter, or ▶). The explorer in the",
    "# sidebar builds queries by clicking.",
    "{",
    "  viewer {",
    "    user { email }",
    "    organization { name }",
    "  }",
    "  documents(first: 5) {",
    "    totalCount",
    "    edges { node { filename } }",
    "  }",
    "}",
    "",
  ].join("\n");

  var endpoint = window.location.pathname;
  var socketUrl = (window.location.protocol === "https:" ? "wss://" : "ws://") +
    window.location.host + endpoint;

  function storedToken() {
    try {
      return window.sessionStorage.getItem(KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) {
        window.sessionStorage.setItem(KEY, token);
      } else {
        window.sessionStorage.removeItem(KEY);
      }
    } catch (e) {
      // Storage refused (private mode): the token lives as long as the page.
    }
  }

  function authorization(token) {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function makeFetcher(token) {
    var fetcher = GraphiQL.createFetcher({
      url: endpoint,
      subscriptionUrl: socketUrl,
      headers: authorization(token),
      wsConnectionParams: token ? { authorization: "Bearer " + token } : {},
    });
    // The fetcher sends a subscription over the WebSocket when the document it is handed
    // says so; GraphiQL hands it the editor's, parsed 100 ms after the last edit. Parsing the
    // text being sent avoids sending a just-pasted subscription over HTTP.
    return function (params, options) {
      var opts = Object.assign({}, options);
      try {
        opts.documentAST = GraphiQL.GraphQL.parse(params.query);
      } catch (e) {
        // Not a document: the server says what is wrong with it.
      }
      return fetcher(params, opts);
    };
  }

  // Who a token is, or why it is refused: the sign-in's check.
  function whoIs(token) {
    return window.fetch(endpoint, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, authorization(token)),
      body: JSON.stringify({ query: WHO }),
    }).then(function (response) {
      return response.json();
    }).then(function (answer) {
      if (answer.errors && answer.errors.length) {
        throw new Error(answer.errors[0].message);
      }
      var viewer = answer.data.viewer;
      return viewer.user ? viewer.user.email : viewer.scopes.join(", ");
    });
  }

  var form = document.getElementById("prism-sign-in");
  var input = document.getElementById("prism-token");
  var status = document.getElementById("prism-status");
  var signOut = document.getElementById("prism-sign-out");
  var mount = document.getElementById("graphiql");
  var root = ReactDOM.createRoot(mount);
  var explorer = GraphiQLPluginExplorer.explorerPlugin();

  function render(token) {
    root.render(
      React.createElement(GraphiQL, {
        fetcher: makeFetcher(token),
        plugins: [explorer],
        defaultQuery: DEFAULT_QUERY,
        defaultEditorToolsVisibility: true,
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: false,
        inputValueDeprecation: true,
      })
    );
  }

  function show(token, who) {
    status.textContent = token ? "Signed in: " + who : "Not signed in";
    signOut.hidden = !token;
    form.hidden = Boolean(token);
    render(token);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      status.textContent = "Paste a token first.";
      return;
    }
    status.textContent = "Checking the token…";
    whoIs(token).then(function (who) {
      storeToken(token);
      input.value = "";
      show(token, who);
    }, function (error) {
      status.textContent = "Token refused: " + error.message;
    });
  });

  signOut.addEventListener("click", function () {
    storeToken("");
    show("", "");
    input.focus();
  });

  var token = storedToken();
  if (token) {
    status.textContent = "Checking the stored token…";
    whoIs(token).then(function (who) {
      show(token, who);
    }, function (error) {
      storeToken("");
      show("", "");
      status.textContent = "Signed out: " + error.message;
    });
  } else {
    show("", "");
  }
})();
