// graphile-worker side of benchmarks/peers.py: one JSON line on stdout per call.
//   node graphile.cjs migrate URL
//   node graphile.cjs enqueue-one URL N | enqueue-many URL N   -> {"rate": jobs/s}
//   node graphile.cjs drain URL W N                              -> {"seconds", "ran", "once"}
"use strict";
const { run, makeWorkerUtils, runMigrations, Logger } = require("graphile-worker");

const quiet = new Logger(() => () => {});
const [mode, url, a, b] = process.argv.slice(2);

async function main() {
  if (mode === "migrate") {
    await runMigrations({ connectionString: url, logger: quiet });
    return {};
  }
  if (mode === "enqueue-one" || mode === "enqueue-many") {
    const n = Number(a);
    const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
    try {
      const start = process.hrtime.bigint();
      if (mode === "enqueue-one") {
        for (let i = 0; i < n; i++) await utils.addJob("noop", { i });
      } else {
        const specs = [];
        for (let i = 0; i < n; i++) specs.push({ identifier: "noop", payload: { i } });
        await utils.addJobs(specs);
      }
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      return { rate: n / seconds };
    } finally {
      await utils.release();
    }
  }
  if (mode === "drain") {
    const workers = Number(a);
    const n = Number(b);
    const seen = new Map();
    let ran = 0;
    let allRan;
    const allRanP = new Promise((resolve) => (allRan = resolve));
    const start = process.hrtime.bigint();
    // The configuration of graphile-worker's own performance page: a local queue of 500
    // jobs fetched at once, completions batched (completeJobBatchDelay 0), a pool of
    // concurrency + 1 connections.
    const runner = await run({
      noHandleSignals: true,
      logger: quiet,
      taskList: {
        noop: async (payload) => {
          seen.set(payload.i, (seen.get(payload.i) ?? 0) + 1);
          if (++ran === n) allRan();
        },
      },
      preset: {
        worker: {
          connectionString: url,
          concurrentJobs: workers,
          maxPoolSize: workers + 1,
          localQueue: { size: 500 },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
          pollInterval: 2000,
        },
      },
    });
    await allRanP;
    // Done = every job's completion committed (completed jobs are deleted).
    const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
    for (;;) {
      const res = await utils.withPgClient((c) =>
        c.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs"),
      );
      if (res.rows[0].n === 0) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    await runner.stop();
    await utils.release();
    let once = seen.size === n;
    for (const count of seen.values()) once = once && count === 1;
    return { seconds, ran, once };
  }
  throw new Error(`unknown mode ${mode}`);
}

main().then(
  (out) => {
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(0);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
