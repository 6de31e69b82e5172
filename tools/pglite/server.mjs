// PGlite (PostgreSQL compiled to WebAssembly) with the pgvector extension, served over the PostgreSQL
// wire protocol on 127.0.0.1:PORT by @electric-sql/pglite-socket. Used by
// tests/integration/pg/test_pgvector.py because Debian ships no pgvector package.
//
// usage: node server.mjs PORT [DATA_DIR]   (PORT 0 picks a free port; no DATA_DIR = in memory)
// Prints one line "READY postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable" when listening,
// then serves until SIGTERM/SIGINT. PGlite is one single-user backend: the socket server accepts one
// connection at a time, so clients must use a single connection (pake: --pg-pool-max 1).
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import net from 'node:net';

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

const want = Number(process.argv[2] ?? 0);
const dataDir = process.argv[3];
const port = want > 0 ? want : await freePort();
const db = await PGlite.create(dataDir ?? undefined, { extensions: { vector } });
const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port, maxConnections: 1,
                                        debug: !!process.env.PGLITE_DEBUG });
// PGlite is ONE backend behind every socket connection: a client's session state (prepared statements,
// SET values, session advisory locks, LISTEN) would outlive its connection and confuse the next one
// (pake prepares statements per connection: "prepared statement ... already exists"). A new connection
// therefore starts with DISCARD ALL, as if it were a fresh backend. The event fires before the
// client's first message is processed (those are handled on a later tick, through the same lock).
server.addEventListener('connection', () => {
  db.exec('DISCARD ALL').catch((e) => console.error('DISCARD ALL failed:', e.message));
});
await server.start();
console.log(`READY postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
    await db.close();
  } finally {
    process.exit(0);
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
