/*
 * The route table: every route of the server, and nothing else registers a handler. The router, the
 * middleware chain, the OpenAPI document test and `pake routes` all read this one table.
 */
#include "api/api.h"
#include "mcp/mcp.h"

const pk_route pk_routes[] = {
    /* notes */
    {"POST", "/v1/notes", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_note_create, "createNote", NULL},
    {"GET", "/v1/notes", PK_RC_READ, 0, pk_api_note_list, "listNotes", NULL},
    {"GET", "/v1/notes/{id}", PK_RC_READ, 0, pk_api_note_get, "getNote", NULL},
    {"PATCH", "/v1/notes/{id}", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_note_patch, "updateNote", NULL},
    {"DELETE", "/v1/notes/{id}", PK_RC_WRITE, 0, pk_api_note_delete, "deleteNote", NULL},
    {"GET", "/v1/notes/{id}/links", PK_RC_READ, 0, pk_api_link_list, "listNoteLinks", NULL},
    {"POST", "/v1/notes/{id}/links", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_link_create, "createNoteLink",
     NULL},
    {"GET", "/v1/notes/{id}/history", PK_RC_READ, 0, pk_api_note_history, "getNoteHistory", NULL},
    {"GET", "/v1/search", PK_RC_SEARCH, 0, pk_api_search, "searchNotes", NULL},
    /* tasks (docs/tasks.md) */
    {"POST", "/v1/tasks", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_task_create, "createTask", NULL},
    {"POST", "/v1/tasks/batch", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_task_create_batch, "createTasks",
     NULL},
    {"GET", "/v1/tasks", PK_RC_READ, 0, pk_api_task_list, "listTasks", NULL},
    {"GET", "/v1/tasks/{id}", PK_RC_READ, 0, pk_api_task_get, "getTask", NULL},
    {"DELETE", "/v1/tasks/{id}", PK_RC_WRITE, 0, pk_api_task_cancel, "cancelTask", NULL},
    {"POST", "/v1/tasks/{id}/retry", PK_RC_WRITE, 0, pk_api_task_retry, "retryTask", NULL},
    {"GET", "/v1/queues", PK_RC_READ, 0, pk_api_queues, "listQueues", NULL},
    /* inbound workflow callbacks (docs/n8n.md) */
    {"POST", "/v1/hooks/{name}", PK_RC_WRITE, PK_ROUTE_JSON_BODY, pk_api_hook, "receiveHook", NULL},
    /* admin */
    {"GET", "/v1/admin/breakers", PK_RC_ADMIN, 0, pk_api_admin_breakers, "listBreakers", NULL},
    {"POST", "/v1/admin/breakers/{name}/force-open", PK_RC_ADMIN, 0, pk_api_admin_breaker_action,
     "forceOpenBreaker", NULL},
    {"POST", "/v1/admin/breakers/{name}/disable", PK_RC_ADMIN, 0, pk_api_admin_breaker_action,
     "disableBreaker", NULL},
    {"POST", "/v1/admin/breakers/{name}/reset", PK_RC_ADMIN, 0, pk_api_admin_breaker_action, "resetBreaker",
     NULL},
    /* compatibility routes of the original PAKE agents */
    {"POST", "/search_notes", PK_RC_SEARCH, PK_ROUTE_JSON_BODY | PK_ROUTE_DEPRECATED,
     pk_api_compat_search_notes, "compatSearchNotes", "/v1/search"},
    {"POST", "/get_note_by_id", PK_RC_READ, PK_ROUTE_JSON_BODY | PK_ROUTE_DEPRECATED,
     pk_api_compat_get_note_by_id, "compatGetNoteById", "/v1/notes/{id}"},
    {"POST", "/notes_from_schema", PK_RC_WRITE, PK_ROUTE_JSON_BODY | PK_ROUTE_DEPRECATED,
     pk_api_compat_notes_from_schema, "compatNotesFromSchema", "/v1/notes"},
    /* Model Context Protocol, Streamable HTTP (src/mcp/mcp_http.c) */
    {"POST", "/mcp", PK_RC_MCP, 0, pk_mcp_http_post, "mcpPost", NULL},
    {"GET", "/mcp", PK_RC_MCP, 0, pk_mcp_http_get, "mcpStream", NULL},
    {"DELETE", "/mcp", PK_RC_MCP, 0, pk_mcp_http_delete, "mcpEndSession", NULL},
    /* operations */
    {"GET", "/health/live", PK_RC_OPS, PK_ROUTE_NO_LOG, pk_api_health_live, "healthLive", NULL},
    {"GET", "/health/ready", PK_RC_OPS, PK_ROUTE_NO_LOG, pk_api_health_ready, "healthReady", NULL},
    {"GET", "/metrics", PK_RC_OPS, PK_ROUTE_NO_LOG, pk_api_metrics, "metrics", NULL},
    {"GET", "/openapi.json", PK_RC_OPS, 0, pk_api_openapi, "openapi", NULL},
};
const size_t pk_routes_count = sizeof pk_routes / sizeof pk_routes[0];
