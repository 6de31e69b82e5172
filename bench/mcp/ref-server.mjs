// Reference for bench/mcp: the official TypeScript SDK's MCP server (McpServer + Streamable HTTP
// transport, one session per client) exposing search_notes over the same notes, searched in-process
// with SQLite FTS5 (node:sqlite) and BM25 ranking, like PAKE's store.
//   node ref-server.mjs <port> <notes.json>
import http from "node:http";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const [port, notesFile] = process.argv.slice(2);
const db = new DatabaseSync(":memory:");
db.exec("CREATE TABLE notes(id TEXT PRIMARY KEY, title TEXT, content TEXT, doc TEXT)");
db.exec("CREATE VIRTUAL TABLE notes_fts USING fts5(title, content, content='notes', content_rowid='rowid')");
const ins = db.prepare("INSERT INTO notes(id, title, content, doc) VALUES (?, ?, ?, ?)");
for (const n of JSON.parse(readFileSync(notesFile, "utf8"))) ins.run(n.id, n.title, n.content, JSON.stringify(n));
db.exec("INSERT INTO notes_fts(notes_fts) VALUES ('rebuild')");
const search = db.prepare(
  "SELECT n.doc AS doc, snippet(notes_fts, 1, '<mark>', '</mark>', '...', 16) AS snippet, -bm25(notes_fts) AS score " +
    "FROM notes_fts JOIN notes n ON n.rowid = notes_fts.rowid WHERE notes_fts MATCH ? ORDER BY bm25(notes_fts) LIMIT ?");

function newServer() {
  const s = new McpServer({ name: "sdk-reference", version: "1.0.0" });
  s.registerTool(
    "search_notes",
    {
      description: "Full-text search over the notes",
      inputSchema: { query: z.string(), limit: z.number().int().min(1).max(100).optional() },
      outputSchema: { count: z.number(), notes: z.array(z.any()), next_cursor: z.string().nullable() },
    },
    async ({ query, limit }) => {
      const q = query.split(/\s+/).filter(Boolean).map((w) => `"${w.replaceAll('"', '""')}"`).join(" ");
      const notes = search.all(q, limit ?? 20).map((r) => ({ ...JSON.parse(r.doc), snippet: r.snippet, score: r.score }));
      const out = { count: notes.length, notes, next_cursor: null };
      return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
    });
  return s;
}

const transports = new Map();
http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
  const sid = req.headers["mcp-session-id"];
  let t = sid && transports.get(sid);
  if (!t) {
    t = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => transports.set(id, t),
    });
    await newServer().connect(t);
  }
  await t.handleRequest(req, res, body);
}).listen(Number(port), "127.0.0.1", () => console.error(`reference listening on ${port}`));
