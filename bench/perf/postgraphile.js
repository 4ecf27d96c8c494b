// PostGraphile 4 in library mode on Node's http server: the comparison point of bench/perf.
//
// Started by bench/perf/servers.py with NODE_PATH pointing at the npm cache where
// postgraphile@4.14 is installed (never a dependency of Prism). Environment:
//   BENCH_PG      node-postgres connection settings (JSON) of the benchmark database
//   BENCH_PORT    port on 127.0.0.1
//   BENCH_TOKENS  {"<bearer token>": "<organization id>"}: the same API token Prism and the raw
//                 server are sent; it is checked by a map lookup, no database round trip.
//   BENCH_CAPTURE optional: a file for the statements it sends while capturing (capture.js)
//
// Each request runs in a transaction that first sets role prism_app and prism.org_id
// (pgSettings), so PostGraphile reads under the same row-level security as Prism.
"use strict";

const { Pool } = require("pg");
const { postgraphile } = require("postgraphile");
const { capturing } = require("./capture.js");
const { V4_OPTIONS, listen } = require("./postgraphile-common.js");

const tokens = JSON.parse(process.env.BENCH_TOKENS || "{}");
const port = Number(process.env.BENCH_PORT || 5678);

function settingsFor(req) {
  const header = req.headers.authorization || "";
  const organization = header.startsWith("Bearer ") ? tokens[header.slice(7).trim()] : undefined;
  if (!organization) {
    const error = new Error("Unauthenticated: send the benchmark API token.");
    error.statusCode = 401;
    throw error;
  }
  return { role: "prism_app", "prism.org_id": organization };
}

const pool = capturing(new Pool(JSON.parse(process.env.BENCH_PG)));
const middleware = postgraphile(pool, "public", { pgSettings: settingsFor, ...V4_OPTIONS });

listen(middleware, port, "postgraphile");
