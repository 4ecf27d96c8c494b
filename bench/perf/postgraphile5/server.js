// PostGraphile 5 (Grafast) on Node's http server, configured as bench/perf/postgraphile.js
// configures 4.14: the same options through PostGraphile 5's V4 preset (makeV4Preset), the
// same role and prism.org_id per request (pgSettings), the same token map.
//
// Started by bench/perf/servers.py with NODE_PATH pointing at the npm cache where this
// directory's package-lock.json is installed (`npm ci`), and `--require polyfill.cjs` on
// Node < 22. Environment: BENCH_PG, BENCH_PORT, BENCH_TOKENS (as postgraphile.js), and
// BENCH_CAPTURE (optional): a file that gets one JSON line {text, values} per SQL statement.
"use strict";

const { Pool } = require("pg");
const { postgraphile } = require("postgraphile");
const { makeV4Preset } = require("postgraphile/presets/v4");
const { makePgService } = require("postgraphile/adaptors/pg");
const { grafserv } = require("postgraphile/grafserv/node");
const { capturing } = require("../capture.js");
const { V4_OPTIONS, listen } = require("../postgraphile-common.js");

const tokens = JSON.parse(process.env.BENCH_TOKENS || "{}");
const port = Number(process.env.BENCH_PORT || 5678);

function settingsFor(req) {
  const header = (req && req.headers.authorization) || "";
  const organization = header.startsWith("Bearer ") ? tokens[header.slice(7).trim()] : undefined;
  if (!organization) {
    throw new Error("Unauthenticated: send the benchmark API token.");
  }
  return { role: "prism_app", "prism.org_id": organization };
}

const pool = capturing(new Pool(JSON.parse(process.env.BENCH_PG)));
const preset = {
  extends: [
    makeV4Preset({ pgSettings: settingsFor, ...V4_OPTIONS }),
  ],
  pgServices: [makePgService({ pool, schemas: ["public"] })],
  grafserv: { graphqlPath: "/graphql", graphiql: false, watch: false },
  grafast: { explain: false },
};

const serv = postgraphile(preset).createServ(grafserv);
const handler = serv.createHandler();
listen(handler, port, "postgraphile 5");
