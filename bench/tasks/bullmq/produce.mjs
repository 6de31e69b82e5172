// BullMQ reference producer of bench/tasks/run.sh. Adds N no-op jobs ({ms: 0}) to "bench-noop" with
// Queue.add, at most CONCURRENCY adds in flight (one connection, as ioredis pipelines them), waits
// until N jobs completed (getJobCounts every 50 ms, bounded by DEADLINE_S), then reads every completed
// job (getJobs, pages of 1000; before that it creates the file $BENCH_DONE_MARK when set: run.sh stops
// counting CPU there) and prints one JSON object with the figures of stats.py, computed the
// same way: enqueue time = job.timestamp (Date.now() in this process when the job is added), finish
// time = job.finishedOn (set by the worker), both in milliseconds.
// With BULK > 0, a second, separate figure: the same N jobs added with addBulk in batches of BULK to
// the queue "bench-noop-bulk" (no worker listens; enqueue rate only), then that queue is obliterated.
//
// usage: node produce.mjs REDIS_PORT N CONCURRENCY DEADLINE_S [BULK]
import { writeFileSync } from 'node:fs';
import { Queue } from 'bullmq';

const [port, n, conc, deadlineS, bulk] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };
const deadline = Date.now() + deadlineS * 1000;
const out = { n, ok: false };

function pct(sorted, p) {
    return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

const queue = new Queue('bench-noop', { connection });
await queue.waitUntilReady();

const t0 = performance.now();
let next = 0;
async function lane() {
    while (next < n) {
        next++;
        await queue.add('noop', { ms: 0 });
    }
}
await Promise.all(Array.from({ length: conc }, lane));
out.client_enqueue_s = (performance.now() - t0) / 1e3;

let counts = {};
while (Date.now() < deadline) {
    counts = await queue.getJobCounts('completed', 'failed');
    if (counts.completed + counts.failed >= n) break;
    await new Promise((r) => setTimeout(r, 50));
}
out.counts = counts;
if (process.env.BENCH_DONE_MARK) writeFileSync(process.env.BENCH_DONE_MARK, '');
if (counts.completed !== n) {
    out.error = `only ${counts.completed} of ${n} jobs completed before the deadline`;
} else {
    const enq = [], fin = [];
    for (let start = 0; start < n; start += 1000) {
        const jobs = await queue.getJobs(['completed'], start, Math.min(start + 999, n - 1), true);
        for (const j of jobs) {
            enq.push(j.timestamp);
            fin.push(j.finishedOn);
        }
    }
    const first = Math.min(...enq), lastIn = Math.max(...enq), lastOut = Math.max(...fin);
    const lat = enq.map((e, i) => fin[i] - e).sort((a, b) => a - b);
    Object.assign(out, {
        count: enq.length,
        enqueue_s: (lastIn - first) / 1e3,
        e2e_s: (lastOut - first) / 1e3,
        enqueue_per_s: (n / Math.max(lastIn - first, 1)) * 1e3,
        e2e_per_s: (n / Math.max(lastOut - first, 1)) * 1e3,
        p50_ms: pct(lat, 0.5),
        p99_ms: pct(lat, 0.99),
        max_ms: lat[lat.length - 1],
    });
    out.ok = enq.length === n;
}
await queue.close();

if (bulk > 0 && out.ok) {
    const bq = new Queue('bench-noop-bulk', { connection });
    await bq.waitUntilReady();
    const b0 = performance.now();
    for (let i = 0; i < n; i += bulk) {
        const batch = [];
        for (let k = i; k < Math.min(i + bulk, n); k++) batch.push({ name: 'noop', data: { ms: 0 } });
        await bq.addBulk(batch);
    }
    out.bulk = bulk;
    out.bulk_enqueue_per_s = n / ((performance.now() - b0) / 1e3);
    await bq.obliterate({ force: true });
    await bq.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
