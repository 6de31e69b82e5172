// End-to-end test of PAKE's MCP server with the official TypeScript SDK client.
//
//   node e2e.mjs http  <mcp-url> <rest-base-url>
//   node e2e.mjs stdio <pake-binary> <data-dir>
//
// Steps: initialize, list tools (the SDK then validates every structuredContent against the tool's
// outputSchema), create a note, search it, read its resource, subscribe and receive
// notifications/resources/updated after a write (over HTTP: a REST PATCH to the same server; over
// stdio: update_note, since REST lives in another process), get a prompt, cancel a slow call and check
// the server stopped it (test_cancelled_count fixture). Exits 0 on success, 1 with a message otherwise.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [mode, a1, a2] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`e2e(${mode}): FAIL: ${msg}`);
  process.exit(1);
};
const check = (cond, msg) => {
  if (!cond) fail(msg);
};
const waitFor = async (pred, ms, what) => {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  fail(`timed out waiting for ${what}`);
};

const transport =
  mode === "http"
    ? new StreamableHTTPClientTransport(new URL(a1))
    : new StdioClientTransport({
        command: a1,
        args: ["mcp", "--data-dir", a2, "--mcp-conformance-fixtures", "--log-level", "warn"],
        stderr: "inherit",
      });
const client = new Client({ name: "pake-e2e", version: "1.0.0" }, { capabilities: {} });
const updates = [];
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updates.push(n.params.uri));

try {
  await client.connect(transport);
  check(client.getServerVersion()?.name === "pake", "serverInfo.name is not pake");
  check(client.getServerCapabilities()?.resources?.subscribe === true, "resources.subscribe not declared");

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const n of ["search_notes", "get_note_by_id", "notes_from_schema", "update_note", "delete_note",
                   "link_notes", "get_note_history"])
    check(names.includes(n), `tool ${n} missing`);

  const word = `zebra${process.pid}`;
  const created = await client.callTool({
    name: "notes_from_schema",
    arguments: { title: "E2E MCP note", content: `The ${word} crosses the road.`, tags: ["e2e"] },
  });
  check(!created.isError, `create failed: ${JSON.stringify(created.content)}`);
  const id = created.structuredContent?.id;
  check(typeof id === "string" && id.length === 36, "create returned no id");

  const found = await client.callTool({ name: "search_notes", arguments: { query: word } });
  check(!found.isError, `search failed: ${JSON.stringify(found.content)}`);
  check(found.structuredContent.notes.some((n) => n.id === id), "search did not find the new note");

  const bad = await client.callTool({ name: "get_note_by_id", arguments: { id: "nope" } });
  check(bad.isError === true, "a bad id must be a tool error (isError)");

  const uri = `pake://notes/${id}`;
  const res = await client.readResource({ uri });
  const text = res.contents[0]?.text ?? "";
  check(text.startsWith("---\n") && text.includes("E2E MCP note") && text.includes(word), "resource markdown wrong");

  await client.subscribeResource({ uri });
  if (mode === "http") {
    const r = await fetch(`${a2}/v1/notes/${id}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "E2E MCP note (edited over REST)" }),
    });
    check(r.status === 200, `REST PATCH answered ${r.status}`);
  } else {
    const u = await client.callTool({ name: "update_note", arguments: { id, title: "E2E MCP note (edited)" } });
    check(!u.isError, "update_note failed");
  }
  await waitFor(() => updates.includes(uri), 5000, "notifications/resources/updated");

  const prompt = await client.getPrompt({ name: "summarize_note", arguments: { id } });
  check(prompt.messages.length >= 1, "summarize_note returned no messages");
  const brief = await client.getPrompt({ name: "research_brief", arguments: { topic: word } });
  check(brief.messages[0].content.text.includes(uri), "research_brief does not cite the note");

  const count = async () =>
    (await client.callTool({ name: "test_cancelled_count", arguments: {} })).structuredContent.cancelled;
  const before = await count();
  const ac = new AbortController();
  const slow = client.callTool({ name: "test_slow_operation", arguments: { seconds: 30 } }, undefined, {
    signal: ac.signal,
    timeout: 60000,
  });
  setTimeout(() => ac.abort("e2e cancels"), 300);
  const t0 = Date.now();
  let rejected = false;
  try {
    await slow;
  } catch {
    rejected = true;
  }
  check(rejected, "the cancelled call did not reject");
  await waitFor(async () => (await count()) > before, 5000, "the server to stop the cancelled call");
  check(Date.now() - t0 < 10000, "cancellation took too long");

  await client.close();
  console.log(`e2e(${mode}): OK`);
  process.exit(0);
} catch (e) {
  fail(e?.stack ?? String(e));
}
