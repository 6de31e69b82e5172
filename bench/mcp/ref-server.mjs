// Reference for bench/mcp: the official TypeScript SDK's MCP server (McpServer + the SDK's Node
// Streamable HTTP transport) exposing search_notes over the same notes as PAKE, searched in-process with
// SQLite FTS5 (Node 22 node:sqlite, in memory).
//
// The search is PAKE's, statement for statement: FTS5 over title, content and tags (the tags' JSON
// text) with the porter/unicode61 tokenizer, rank = bm25(10, 1, 5), ORDER BY rank LIMIT n+1 (FTS5
// sorts and stops at the limit, so snippet() runs for the returned rows only), the same snippet(), and
// each hit is the stored note as PAKE serves it (the JSONL that run.sh exports from PAKE) plus snippet
// and score. The tool result carries the JSON both as text content and as structuredContent, as PAKE.
//
// Configured the way the SDK's examples do for a session-ful client (simpleStreamableHttp /
// jsonResponseStreamableHttp): one McpServer + transport per session, created at initialize and
// reused for every later request of that session (no per-request server construction). REF_JSON=1
// sets enableJsonResponse (plain JSON answers, the SDK's cheaper mode); otherwise calls are answered
// as SSE streams (the SDK default).
//   node ref-server.mjs <port> <notes.jsonl>
import http from "node:http";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const [port, notesFile] = process.argv.slice(2);
const jsonResponse = process.env.REF_JSON === "1";

const db = new DatabaseSync(":memory:");
db.exec("CREATE TABLE notes(seq INTEGER PRIMARY KEY, title TEXT, content TEXT, tags TEXT, doc TEXT)");
db.exec(
  "CREATE VIRTUAL TABLE notes_fts USING fts5(title, content, tags, content='notes', content_rowid='seq'," +
    " tokenize='porter unicode61 remove_diacritics 2')");
db.exec("INSERT INTO notes_fts(notes_fts, rank) VALUES ('rank', 'bm25(10.0, 1.0, 5.0)')");
const ins = db.prepare("INSERT INTO notes(title, content, tags, doc) VALUES (?, ?, ?, ?)");
let loaded = 0;
db.exec("BEGIN");
for (const line of readFileSync(notesFile, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const n = JSON.parse(line);
  ins.run(n.title, n.content, JSON.stringify(n.tags ?? []), line);
  loaded++;
}
db.exec("COMMIT");
db.exec("INSERT INTO notes_fts(notes_fts) VALUES ('rebuild')");
const search = db.prepare(
  "SELECT n.doc AS doc, snippet(notes_fts, -1, '<mark>', '</mark>', '...', 24) AS snippet," +
    " notes_fts.rank AS rank FROM notes_fts CROSS JOIN notes n ON n.seq = notes_fts.rowid" +
    " WHERE notes_fts MATCH ? ORDER BY notes_fts.rank LIMIT ? OFFSET ?");

// PAKE's query language for plain words: each whitespace-separated word becomes a quoted FTS5 term.
const ftsQuery = (text) =>
  text.split(/\s+/).filter((w) => /[\p{L}\p{N}]/u.test(w)).map((w) => `"${w.replaceAll('"', '""')}"`).join(" ");

function searchNotes({ query, limit, cursor }) {
  const n = Math.min(Math.max(limit ?? 20, 1), 100);
  const offset = cursor ? Number.parseInt(cursor, 10) || 0 : 0;
  const rows = search.all(ftsQuery(query), n + 1, offset);
  const more = rows.length > n;
  const notes = rows.slice(0, n).map((r) => ({ ...JSON.parse(r.doc), snippet: r.snippet, score: -r.rank }));
  return { count: notes.length, notes, next_cursor: more ? String(offset + n) : null };
}

function newServer() {
  const s = new McpServer({ name: "sdk-reference", version: "1.0.0" });
  s.registerTool(
    "search_notes",
    {
      description: "Full-text search over the notes (FTS5, BM25 relevance)",
      inputSchema: {
        query: z.string().min(1),
        limit: z.number().int().min(1).max(100).optional(),
        cursor: z.string().optional(),
      },
      outputSchema: { count: z.number(), notes: z.array(z.any()), next_cursor: z.string().nullable() },
      annotations: { readOnlyHint: true },
    },
    async (args) => {
      const out = searchNotes(args);
      return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
    });
  return s;
}

const transports = new Map();
const fail = (res, status, message) => {
  res.writeHead(status, { "content-type": "application/json" }).end(
    JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message }, id: null }));
};

http.createServer(async (req, res) => {
  try {
    let body;
    if (req.method === "POST") {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch {
        return fail(res, 400, "Parse error");
      }
    }
    const sid = req.headers["mcp-session-id"];
    let t = sid ? transports.get(sid) : undefined;
    if (!t) {
      if (sid) return fail(res, 404, "Session not found");
      if (req.method !== "POST" || !isInitializeRequest(body)) return fail(res, 400, "No valid session ID");
      t = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: jsonResponse,
        onsessioninitialized: (id) => transports.set(id, t),
      });
      t.onclose = () => t.sessionId && transports.delete(t.sessionId);
      await newServer().connect(t);
    }
    await t.handleRequest(req, res, body);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) fail(res, 500, "Internal error");
  }
}).listen(Number(port), "127.0.0.1", () =>
  console.error(`reference listening on 127.0.0.1:${port}: ${loaded} notes, ${jsonResponse ? "JSON" : "SSE"} answers`));
