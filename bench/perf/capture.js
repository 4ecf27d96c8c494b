// The SQL a PostGraphile server sends, for bench/perf's physical limit: wraps a pg Pool so
// that, while capturing, every statement a client sends is appended to BENCH_CAPTURE as one
// JSON line {text, values}. Capturing is toggled by SIGUSR2 (off at start), so the timed runs
// pay nothing for it.
"use strict";

const fs = require("fs");

let on = false;
const file = process.env.BENCH_CAPTURE;
if (file) {
  process.on("SIGUSR2", () => {
    on = !on;
    fs.appendFileSync(file, JSON.stringify({ capturing: on }) + "\n");
  });
}

function capturing(pool) {
  if (!file) return pool;
  pool.on("connect", (client) => {
    const query = client.query;
    client.query = function (config, values, callback) {
      if (on) {
        const text = typeof config === "string" ? config : config && config.text;
        const params = Array.isArray(values) ? values : config && config.values;
        if (typeof text === "string") {
          fs.appendFileSync(file, JSON.stringify({ text, values: params || [] }) + "\n");
        }
      }
      return query.apply(this, arguments);
    };
  });
  return pool;
}

module.exports = { capturing };
