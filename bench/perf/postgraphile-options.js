// The PostGraphile 4 options both comparison servers run with: postgraphile.js (4.14) passes
// them as they are, postgraphile5/server.js through PostGraphile 5's V4 preset (makeV4Preset).
// Each adds its own pgSettings.
"use strict";

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

module.exports = { V4_OPTIONS };
