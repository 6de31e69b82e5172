// Closed-loop load for bench/mcp: C clients, each with its own MCP session on a keep-alive
// connection, call tools/call search_notes back to back for D seconds (queries rotate over a word
// list). Prints one JSON line: requests/s and latency percentiles (ms).
//   node load.mjs <mcp-url> <clients> <seconds>
import http from "node:http";

const [url, clients = "16", seconds = "10"] = process.argv.slice(2);
const u = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(clients) });
const WORDS = Array.from({ length: 50 }, (_, i) => `w${String(i).padStart(3, "0")}`);

function post(body, sid) {
  return new Promise((resolve, reject) => {
    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream",
                      "mcp-protocol-version": "2025-11-25" };
    if (sid) headers["mcp-session-id"] = sid;
    const r = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", headers, agent }, (res) => {
      const parts = [];
      res.on("data", (c) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode, sid: res.headers["mcp-session-id"], body: Buffer.concat(parts).toString() }));
    });
    r.on("error", reject);
    r.end(JSON.stringify(body));
  });
}

async function client(i, until, lat) {
  const init = await post({ jsonrpc: "2.0", id: 0, method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "load", version: "1" } } });
  const sid = init.sid;
  await post({ jsonrpc: "2.0", method: "notifications/initialized" }, sid);
  let n = 0, errors = 0;
  while (Date.now() < until) {
    const t0 = process.hrtime.bigint();
    const r = await post({ jsonrpc: "2.0", id: ++n, method: "tools/call",
      params: { name: "search_notes", arguments: { query: WORDS[(i + n) % WORDS.length], limit: 10 } } }, sid);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== 200 || !r.body.includes('"structuredContent"')) errors++;
  }
  return errors;
}

const lat = [];
const t0 = Date.now();
const until = t0 + Number(seconds) * 1000;
const errs = await Promise.all(Array.from({ length: Number(clients) }, (_, i) => client(i, until, lat)));
const secs = (Date.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
console.log(JSON.stringify({ requests: lat.length, rps: +(lat.length / secs).toFixed(1), p50_ms: +p(0.5).toFixed(2),
  p99_ms: +p(0.99).toFixed(2), errors: errs.reduce((a, b) => a + b, 0) }));
agent.destroy();
