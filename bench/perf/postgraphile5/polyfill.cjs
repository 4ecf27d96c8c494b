// Promise.withResolvers (Node >= 22) for PostGraphile 5 on Node 20: preloaded with --require.
"use strict";
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((yes, no) => {
      resolve = yes;
      reject = no;
    });
    return { promise, resolve, reject };
  };
}
