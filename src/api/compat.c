/*
 * Compatibility routes of the original PAKE agents and n8n workflows. They are served by the v1 code
 * (same validation, guard, store calls and envelope) and answered with Deprecation: true and a Link to
 * the successor v1 route (added by the server for routes flagged PK_ROUTE_DEPRECATED).
 *   POST /search_notes      {"query": "...", "filters": {...}, "limit": n, "cursor": "..."} -> GET /v1/search
 *   POST /get_note_by_id    {"note_id": "..."} (or "id")                                   -> GET
 * /v1/notes/{id} POST /notes_from_schema {note fields, as POST /v1/notes}                                ->
 * POST /v1/notes
 */
#include "api/api.h"
#include "core/id.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void pk_api_compat_search_notes(pk_req *r)
{
    pk_query_args *qa = malloc(sizeof *qa);
    pk_err *e = pk_api_parse_query_json(r, r->json, qa);
    if (e) {
        pk_query_args_free_void(qa);
        return pk_respond_error(r, e);
    }
    pk_api_search_with(r, qa);
}

void pk_api_compat_get_note_by_id(pk_req *r)
{
    const cJSON *o = r->json;
    if (!cJSON_IsObject(o))
        return pk_respond_error(r, pk_err_invalid("the request body must be a JSON object"));
    pk_err *ve = NULL;
    const cJSON *id = NULL;
    for (const cJSON *c = o->child; c; c = c->next) {
        if (!strcmp(c->string, "note_id") || !strcmp(c->string, "id"))
            id = c;
        else {
            if (!ve) ve = pk_err_invalid("the request has invalid fields");
            pk_err_add_field(ve, c->string, "is not a known field");
        }
    }
    if (!ve && (!cJSON_IsString(id))) {
        ve = pk_err_invalid("the request has invalid fields");
        pk_err_add_field(ve, "note_id", "is required and must be a string");
    }
    if (ve) return pk_respond_error(r, ve);
    char lid[37];
    const char *s = id->valuestring;
    if (strlen(s) == 36) {
        for (int i = 0; i < 36; i++)
            lid[i] = (char)tolower((unsigned char)s[i]);
        lid[36] = '\0';
        if (pk_uuid_valid(lid, 36)) {
            h2o_iovec_t succ =
                h2o_concat(&r->h2o->pool, h2o_iovec_init(H2O_STRLIT("/v1/notes/")), h2o_iovec_init(lid, 36));
            r->successor = succ.base; /* h2o_concat NUL-terminates */
            return pk_api_note_get_id(r, lid);
        }
    }
    pk_err *e = pk_err_invalid("the request has invalid fields");
    pk_err_add_field(e, "note_id", "must be a note id (UUID)");
    pk_respond_error(r, e);
}

void pk_api_compat_notes_from_schema(pk_req *r)
{
    pk_api_note_create_from(r, r->json);
}
