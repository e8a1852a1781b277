import os from 'node:os';
import { graphileWorker, loadGraphileWorker } from './peers/graphile-worker.js';
import { openBenchServer } from './support.js';
import { interestAccrual } from './workloads/accrual.js';
import { awsCost } from './workloads/aws-cost.js';
import { consolePages } from './workloads/console.js';
import {
  burstAfterIdle,
  growth,
  latency,
  latencyFloor,
  latencyOverFloor,
  throughput,
  waitingGrowth,
} from './workloads/core.js';
import { load } from './workloads/load.js';
import { rateLimited } from './workloads/rate.js';
import { valuationWal } from './workloads/valuation.js';

/**
 * `npm run bench [-- --json] [-- --only W1,W2]`: the benchmark workloads, each on a fresh database of the
 * server named by DATABASE_URL (else an embedded PostgreSQL). Compare figures within one run: the machine
 * is shared and noisy.
 *
 * `--peers` also runs W1 and W2 on graphile-worker (tuned) in the same run and prints the ratios; it needs
 * `npm install --no-save graphile-worker@0.18.0` first.
 */
const args = process.argv.slice(2);
const json = args.includes('--json');
const onlyArg = args.find((a) => a.startsWith('--only='))?.slice('--only='.length);
const only = onlyArg ? new Set(onlyArg.split(',')) : null;
const wanted = (w: string) => !only || only.has(w);
const peers = args.includes('--peers');

const server = await openBenchServer();
const results: Record<string, unknown> = {
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
  },
  database: server.description,
};
const log = (line: string) => {
  if (!json) console.log(line);
};
try {
  if (wanted('W1')) {
    const r = await throughput(server);
    results.W1_throughput = r;
    log(
      `W1 throughput   enqueue ${r.enqueueRowsPerSecond} rows/s, drain ${r.drainJobsPerSecond} jobs/s (default worker, concurrency 10), worker CPU ${r.workerCpuMsPer1000Jobs} ms and server CPU ${r.serverCpuMsPer1000Jobs ?? '?'} ms per 1,000 jobs, WAL ${r.walBytesPerJob} B per job`,
    );
  }
  if (wanted('W2')) {
    const r = await latency(server, 'same-process');
    results.W2_latency = r;
    log(
      `W2 latency      enqueue-to-start p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, max ${r.maxMs} ms (${r.jobs} jobs, idle worker, enqueued in its process: eager start)`,
    );
    const other = await latency(server, 'another-process');
    results.W2_latency_from_another_process = other;
    log(
      `W2 other proc.  enqueue-to-start p50 ${other.p50Ms} ms, p99 ${other.p99Ms} ms, max ${other.maxMs} ms (enqueued through another connection pool: NOTIFY and claim)`,
    );
    const floor = await latencyFloor(server);
    results.W2_floor = floor;
    log(
      `W2 floor        no job system: bare INSERT+NOTIFY, LISTEN, bare claim p50 ${floor.insertNotifyClaim.p50Ms} ms, p99 ${floor.insertNotifyClaim.p99Ms} ms; bare INSERT p50 ${floor.insertOnly.p50Ms} ms, p99 ${floor.insertOnly.p99Ms} ms; the same with no idle before it p50 ${floor.insertOnlyBackToBack.p50Ms} ms, p99 ${floor.insertOnlyBackToBack.p99Ms} ms`,
    );
    const over = await latencyOverFloor(server);
    results.W2_over_floor = over;
    log(
      `W2 alternating  eager start p50 ${over.eagerStart.p50Ms} ms, p99 ${over.eagerStart.p99Ms} ms; bare INSERT on the same pool p50 ${over.bareInsert.p50Ms} ms, p99 ${over.bareInsert.p99Ms} ms (alternately, each after 20 ms idle: what the job system adds to the commit)`,
    );
  }
  if (peers) {
    const gw = await loadGraphileWorker();
    if (!gw) {
      log('PEERS           graphile-worker is not installed: npm install --no-save graphile-worker@0.18.0');
    } else {
      const r = await graphileWorker(server, gw);
      const w1 = results.W1_throughput as Awaited<ReturnType<typeof throughput>> | undefined;
      const w2 = results.W2_latency as Awaited<ReturnType<typeof latency>> | undefined;
      const w2other = results.W2_latency_from_another_process as
        | Awaited<ReturnType<typeof latency>>
        | undefined;
      const ratios = {
        drain: w1 ? +(w1.drainJobsPerSecond / r.W1.drainJobsPerSecond).toFixed(2) : null,
        enqueue: w1 ? +(w1.enqueueRowsPerSecond / r.W1.enqueueRowsPerSecond).toFixed(2) : null,
        latencyP50: w2 ? +(w2.p50Ms / r.W2.p50Ms).toFixed(2) : null,
        latencyP99: w2 ? +(w2.p99Ms / r.W2.p99Ms).toFixed(2) : null,
        latencyFromAnotherProcessP50: w2other ? +(w2other.p50Ms / r.W2.p50Ms).toFixed(2) : null,
        latencyFromAnotherProcessP99: w2other ? +(w2other.p99Ms / r.W2.p99Ms).toFixed(2) : null,
      };
      results.PEER_graphile_worker = { ...r, ratios };
      log(
        `PEER W1         graphile-worker (local queue 500, batched completion): enqueue ${r.W1.enqueueRowsPerSecond} rows/s, drain ${r.W1.drainJobsPerSecond} jobs/s, its CPU ${r.W1.processCpuMsPer1000Jobs} ms and server CPU ${r.W1.serverCpuMsPer1000Jobs ?? '?'} ms per 1,000 jobs, WAL ${r.W1.walBytesPerJob} B per job`,
      );
      log(
        `PEER W2         graphile-worker: add-to-start p50 ${r.W2.p50Ms} ms, p99 ${r.W2.p99Ms} ms, max ${r.W2.maxMs} ms`,
      );
      log(
        `RATIOS          lana-jobs / graphile-worker: drain ${ratios.drain ?? '-'}x, enqueue ${ratios.enqueue ?? '-'}x, latency p50 ${ratios.latencyP50 ?? '-'}x, p99 ${ratios.latencyP99 ?? '-'}x (same process), p50 ${ratios.latencyFromAnotherProcessP50 ?? '-'}x, p99 ${ratios.latencyFromAnotherProcessP99 ?? '-'}x (another process) (latency: lower is better)`,
      );
    }
  }
  if (wanted('W3')) {
    const r = await growth(server);
    results.W3_growth = r;
    log(
      `W3 growth       claim+complete ${r.small.claimCompleteMsPer1000} ms/1000 jobs with ${r.small.history} in history, ${r.large.claimCompleteMsPer1000} with ${r.large.history}: ratio ${r.ratio}`,
    );
    const w = await waitingGrowth(server);
    results.W3_waiting = w;
    log(
      `W3 waiting      idle worker's claim ${w.idleClaimMs.empty} ms with no job waiting, ${w.idleClaimMs.waiting} ms with ${w.waiting} scheduled ahead: ratio ${w.ratio}`,
    );
    const b = await burstAfterIdle(server);
    results.W3_burst = b;
    log(
      `W3 burst        claim+complete ${b.claimCompleteMsPer1000.dueOnly} ms/1000 jobs draining ${b.burst.due} due jobs, ${b.claimCompleteMsPer1000.withTheRest} with ${b.burst.scheduledAhead} more scheduled ahead and ${b.burst.runningElsewhere} running elsewhere (plans made on an idle queue): ratio ${b.ratio}`,
    );
  }
  if (wanted('W6')) {
    const r = await consolePages(server);
    results.W6_console = r;
    log(
      `W6 console      page time with ${r.history.large} vs ${r.history.small} jobs in history: ${r.pages.map((p) => `${p.path} ${p.largeMs}/${p.smallMs} ms (${p.ratio})`).join(', ')}; worst ratio ${r.worstRatio}`,
    );
  }
  if (wanted('W4')) {
    const r = await interestAccrual(server);
    results.W4_interest_accrual = r;
    log(
      `W4 accrual      ${r.facilities} facilities, one day, medians of ${r.rounds} alternating rounds: floor (one INSERT ... SELECT + UPDATE) ${r.floorSeconds} s, one pass ${r.singlePassSeconds} s, ${r.batches} batches ${r.batchedSeconds} s (slowest batch ${r.slowestBatchSeconds} s): one pass / floor ${r.singleOverFloor}, batched / floor ${r.batchedOverFloor}, batched / one pass ${r.batchedOverSingle}`,
    );
  }
  if (wanted('VAL')) {
    const r = await valuationWal(server);
    results.VAL_valuation_wal = r;
    log(
      `VAL valuation   ${r.facilities} facilities, ${r.changed} changed: WAL ${r.walOnePercentMB} MB (${r.rowsWritten} rows) vs ${r.walFirstRunMB} MB writing all: ratio ${r.ratio}`,
    );
  }
  if (wanted('W5')) {
    const r = await awsCost(server);
    results.W5_aws_cost = r;
    log(
      `W5 AWS calls    per job: ${r.dataApiCallsPerJob} Data API, ${r.putEventsCallsPerJob} PutEvents calls (${r.putEventsEntriesPerJob} entries), ${r.lambdaInvocationsPerJob} Lambda invocations: about $${r.requestCostPerMillionJobsUsd} in requests per million jobs`,
    );
  }
  if (wanted('LOAD')) {
    const r = await load(server);
    results.LOAD_100k = r;
    log(
      `LOAD            ${r.jobs} jobs (5% failing) drained in ${r.seconds} s (${r.jobsPerSecond} jobs/s); worker RSS ${r.rssMiB.start} MiB at start, peak ${r.rssMiB.peak}, peak in the second half ${r.rssMiB.peakInSecondHalf}`,
    );
  }
  // A minute long: only when asked for by name.
  if (only?.has('RATE')) {
    const r = await rateLimited(server);
    results.RATE_limited = r;
    log(
      `RATE            ${r.limit} starts a second: at most ${r.maxInAnyWindow} begun in any 1 s window, ${r.startsPerSecond} a second over ${r.seconds} s (${r.started} started, ${r.workers} workers)`,
    );
  }
} finally {
  await server.stop();
}
if (json) console.log(JSON.stringify(results));
