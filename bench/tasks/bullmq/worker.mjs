// BullMQ reference worker of bench/tasks/run.sh: one Worker on queue "bench-noop" with a no-op
// processor and the given concurrency (jobs in flight in this process). BullMQ's defaults otherwise
// (completed jobs are kept: the producer reads their timestamps). Once connected it RPUSHes its pid to
// the Redis list "bench:ready", which the driver waits for; SIGTERM closes the worker gracefully.
//
// usage: node worker.mjs REDIS_PORT CONCURRENCY
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

const port = Number(process.argv[2]);
const concurrency = Number(process.argv[3] || 1);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };

const worker = new Worker('bench-noop', async () => {}, { connection, concurrency });
worker.on('error', (e) => console.error('worker error:', e.message));
await worker.waitUntilReady();
const signal = new Redis(connection);
await signal.rpush('bench:ready', String(process.pid));
signal.disconnect();

let closing = false;
process.on('SIGTERM', async () => {
    if (closing) return;
    closing = true;
    await worker.close();
    process.exit(0);
});
