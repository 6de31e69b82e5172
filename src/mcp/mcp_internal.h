/*
 * mcp_internal: the tables the dispatcher serves (tools, prompts, fixture resources) and helpers
 * shared by the files of src/mcp. Not used outside the module.
 */
#ifndef PAKE_MCP_INTERNAL_H
#define PAKE_MCP_INTERNAL_H
#include "mcp/mcp.h"

/* A tool. `prepare` runs on the transport thread with the validated arguments object: it either sets
 * c->work (+ c->data) for an async call, or writes a CallToolResult into `result` and returns NULL.
 * A returned error becomes an isError result. */
typedef struct mcp_tool {
    const char *name, *title, *description;
    const char *input_schema;  /* JSON */
    const char *output_schema; /* JSON or NULL */
    const char *annotations;   /* JSON or NULL */
    pk_err *(*prepare)(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result);
    /* Its work sends nothing related to the call before the result (no log messages, progress or
     * server->client requests): over HTTP the call is answered as application/json, without an SSE
     * stream, unless the client asked for progress (params._meta.progressToken). */
    bool result_only;
} mcp_tool;

/* A prompt: `get` runs on the transport thread; same contract as a tool's prepare, writing a
 * GetPromptResult; a returned error is a JSON-RPC invalid-params error. */
typedef struct mcp_prompt {
    const char *name, *title, *description;
    const char *arguments; /* JSON array of {name, description, required} */
    pk_err *(*get)(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result);
} mcp_prompt;

/* A fixed resource (fixtures). */
typedef struct mcp_resource {
    const char *uri, *name, *description, *mime;
    const char *text; /* or NULL with blob */
    const char *blob; /* base64 */
} mcp_resource;

/* tools.c: PAKE's own tools, prompts, note resources. */
extern const mcp_tool pk_mcp_tools[];
extern const size_t pk_mcp_tools_count;
extern const mcp_prompt pk_mcp_prompts[];
extern const size_t pk_mcp_prompts_count;
/* resources/list page of notes: async (store) */
void pk_mcp_notes_list_work(pk_mcp_call *c, pk_job *j);
/* resources/read pake://notes/{id}: prepares an async read; error when the uri is not a note uri */
bool pk_mcp_note_uri(const char *uri, char id[37]);
void pk_mcp_note_read_work(pk_mcp_call *c, pk_job *j);
/* Renders a note (store JSON) as markdown with YAML front matter. */
void pk_mcp_note_markdown(const cJSON *note, pk_buf *out);
/* Tool result helpers: `json` (n bytes) as structuredContent and, escaped, as the text content (for
 * clients without structured output); isError from an error. */
void pk_mcp_tool_result(pk_buf *out, const char *json, size_t n);
void pk_mcp_tool_error_result(pk_buf *out, const pk_err *e);
/* Guard over every string inside `v` (tool or prompt argument surface). */
pk_err *pk_mcp_guard_strings(pk_req *r, int surface, const char *field, const cJSON *v);

/* fixtures.c: what the conformance suite calls. */
extern const mcp_tool pk_mcp_fixture_tools[];
extern const size_t pk_mcp_fixture_tools_count;
extern const mcp_prompt pk_mcp_fixture_prompts[];
extern const size_t pk_mcp_fixture_prompts_count;
extern const mcp_resource pk_mcp_fixture_resources[];
extern const size_t pk_mcp_fixture_resources_count;
/* test://template/{id}/data: true and the contents JSON when uri matches */
bool pk_mcp_fixture_template_read(const char *uri, pk_buf *contents);

/* A pk_job for a worker that is not tied to an HTTP request (stdio, fuzzer, HTTP streams). */
void pk_mcp_job_init(pk_job *j, pk_server *srv, pk_mcp_call *c);
#endif
