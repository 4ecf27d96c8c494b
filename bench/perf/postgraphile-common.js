// What both PostGraphile comparison servers share: postgraphile.js (4.14) and
// postgraphile5/server.js (PostGraphile 5 through its V4 preset, makeV4Preset) run with the
// same options (each adds its own pgSettings) on the same Node http server with /healthz.
"use strict";

const http = require("http");

const V4_OPTIONS = Object.freeze({
  disableDefaultMutations: true,
  dynamicJson: true,
  setofFunctionsContainNulls: false,
  legacyRelations: "omit",
  graphiql: false,
  disableQueryLog: true,
  enableQueryBatching: false,
  retryOnInitFail: false,
  watchPg: false,
});

// Serve `handler` on 127.0.0.1:port, answering /healthz itself; `name` is logged at start.
function listen(handler, port, name) {
  http
    .createServer((req, res) => {
      if (req.url === "/healthz") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"status":"ok"}');
        return;
      }
      handler(req, res);
    })
    .listen(port, "127.0.0.1", () => {
      console.log(`${name} listening on http://127.0.0.1:${port}/graphql`);
    });
}

module.exports = { V4_OPTIONS, listen };
