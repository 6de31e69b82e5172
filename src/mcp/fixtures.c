/*
 * Conformance fixtures: the tools, resources and prompts the official MCP conformance suite
 * (@modelcontextprotocol/conformance) calls by name, registered only with
 * `pake serve --mcp-conformance-fixtures` (never in a normal server). Their behaviour follows the
 * suite's scenario descriptions: fixed content of each type, logging and progress with ~50 ms
 * delays, sampling and elicitation requests to the client, and a tool that closes its SSE stream
 * mid-call (resumability). test_slow_operation (and test_cancelled_count) let the end-to-end tests
 * check that cancellation stops work deterministically.
 */
#include "mcp/mcp_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PNG_1PX                                                                                              \
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
#define WAV_TINY "UklGRigAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQQAAACAgICA"
#define NO_ARGS "{\"type\":\"object\",\"properties\":{}}"

static pk_err *fixed(pk_buf *result, const char *json)
{
    pk_buf_puts(result, json);
    return NULL;
}

static pk_err *simple_text(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(
        res, "{\"content\":[{\"type\":\"text\",\"text\":\"This is a simple text response for testing.\"}]}");
}
static pk_err *image(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res,
                 "{\"content\":[{\"type\":\"image\",\"data\":\"" PNG_1PX "\",\"mimeType\":\"image/png\"}]}");
}
static pk_err *audio(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res,
                 "{\"content\":[{\"type\":\"audio\",\"data\":\"" WAV_TINY "\",\"mimeType\":\"audio/wav\"}]}");
}
static pk_err *embedded(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res,
                 "{\"content\":[{\"type\":\"resource\",\"resource\":{\"uri\":\"test://embedded-resource\","
                 "\"mimeType\":\"text/plain\",\"text\":\"This is an embedded resource content.\"}}]}");
}
static pk_err *mixed(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res,
                 "{\"content\":[{\"type\":\"text\",\"text\":\"Multiple content types test:\"},{\"type\":"
                 "\"image\",\"data\":\"" PNG_1PX "\",\"mimeType\":\"image/png\"},{\"type\":\"resource\","
                 "\"resource\":{\"uri\":\"test://mixed-content-resource\",\"mimeType\":\"application/json\","
                 "\"text\":\"{\\\"test\\\":\\\"data\\\",\\\"value\\\":123}\"}}]}");
}
static pk_err *error_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res, "{\"isError\":true,\"content\":[{\"type\":\"text\",\"text\":\"This tool intentionally "
                      "returns an error for testing\"}]}");
}
static pk_err *schema_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res, "{\"content\":[{\"type\":\"text\",\"text\":\"JSON Schema 2020-12 tool called\"}]}");
}
static pk_err *cancelled_count(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    long n = atomic_load(&pk_mcp_hub_get()->fixture_cancelled);
    pk_buf_printf(
        res, "{\"content\":[{\"type\":\"text\",\"text\":\"%ld\"}],\"structuredContent\":{\"cancelled\":%ld}}",
        n, n);
    return NULL;
}

static void logging_work(pk_mcp_call *c, pk_job *j)
{
    pk_mcp_log(c->s, c, "info", "conformance", "\"Tool execution started\"");
    pk_mcp_call_sleep(c, 50);
    pk_mcp_log(c->s, c, "info", "conformance", "\"Tool processing data\"");
    pk_mcp_call_sleep(c, 50);
    pk_mcp_log(c->s, c, "info", "conformance", "\"Tool execution completed\"");
    const char *r =
        "{\"content\":[{\"type\":\"text\",\"text\":\"Tool with logging executed successfully\"}]}";
    pk_mcp_call_reply(c, r, strlen(r));
}

static void progress_work(pk_mcp_call *c, pk_job *j)
{
    pk_mcp_call_progress(c, 0, 100, "started");
    pk_mcp_call_sleep(c, 50);
    pk_mcp_call_progress(c, 50, 100, "half way");
    pk_mcp_call_sleep(c, 50);
    pk_mcp_call_progress(c, 100, 100, "done");
    const char *r =
        "{\"content\":[{\"type\":\"text\",\"text\":\"Tool with progress executed successfully\"}]}";
    pk_mcp_call_reply(c, r, strlen(r));
}

/* test_slow_operation {seconds}: sleeps in steps, reporting progress, until done or cancelled. */
static void slow_work(pk_mcp_call *c, pk_job *j)
{
    int ms = (int)(intptr_t)c->data;
    for (int t = 0; t < ms; t += 100) {
        pk_mcp_call_progress(c, t, ms, NULL);
        if (!pk_mcp_call_sleep(c, 100)) {
            atomic_fetch_add(&pk_mcp_hub_get()->fixture_cancelled, 1);
            pk_mcp_call_error(c, -32800, "request cancelled", NULL);
            return;
        }
    }
    const char *r = "{\"content\":[{\"type\":\"text\",\"text\":\"slow operation finished\"}]}";
    pk_mcp_call_reply(c, r, strlen(r));
}

static pk_err *async(pk_mcp_call *c, pk_mcp_work_fn fn)
{
    c->work = fn;
    return NULL;
}
static pk_err *logging_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return async(c, logging_work);
}
static pk_err *progress_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return async(c, progress_work);
}
static pk_err *slow_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(a, "seconds");
    double sec = cJSON_IsNumber(s) ? s->valuedouble : 10;
    if (sec < 0 || sec > 60) return pk_err_invalid("seconds must be between 0 and 60");
    c->data = (void *)(intptr_t)(sec * 1000);
    return async(c, slow_work);
}

/* Sampling and elicitation: ask the client, answer with what it said. */
static void ask_and_reply(pk_mcp_call *c, const char *method, const char *params, const char *prefix)
{
    pk_buf answer = PK_BUF_INIT, res = PK_BUF_INIT, text = PK_BUF_INIT;
    bool ok = pk_mcp_call_ask(c, method, params, 30000, &answer);
    pk_buf_printf(&text, "%s%s", prefix, answer.data ? answer.data : "");
    if (ok && !strcmp(method, "sampling/createMessage")) {
        cJSON *a = cJSON_Parse(answer.data);
        const cJSON *ct = a ? cJSON_GetObjectItemCaseSensitive(a, "content") : NULL;
        const cJSON *tx = ct ? cJSON_GetObjectItemCaseSensitive(ct, "text") : NULL;
        if (cJSON_IsString(tx)) {
            pk_buf_reset(&text);
            pk_buf_printf(&text, "%s%s", prefix, tx->valuestring);
        }
        cJSON_Delete(a);
    }
    pk_buf_printf(&res, "{\"content\":[{\"type\":\"text\",\"text\":\"");
    pk_json_escape(&res, text.data, text.len);
    pk_buf_printf(&res, "\"}],\"isError\":%s}", ok ? "false" : "true");
    pk_mcp_call_reply(c, res.data, res.len);
    pk_buf_free(&answer);
    pk_buf_free(&res);
    pk_buf_free(&text);
}

static void sampling_work(pk_mcp_call *c, pk_job *j)
{
    ask_and_reply(c, "sampling/createMessage", c->data, "LLM response: ");
}
static void elicit_work(pk_mcp_call *c, pk_job *j)
{
    ask_and_reply(c, "elicitation/create", c->data, "User response: ");
}
static void elicit_done_work(pk_mcp_call *c, pk_job *j)
{
    ask_and_reply(c, "elicitation/create", c->data, "Elicitation completed: ");
}

static pk_err *need_cap(pk_mcp_call *c, bool sampling)
{
    pthread_mutex_lock(&c->s->mu);
    bool ok = sampling ? c->s->cap_sampling : c->s->cap_elicitation;
    pthread_mutex_unlock(&c->s->mu);
    return ok ? NULL
              : pk_err_new("capability_missing", 400, "the client did not declare the %s capability",
                           sampling ? "sampling" : "elicitation");
}

static pk_err *with_params(pk_mcp_call *c, pk_buf *p, pk_mcp_work_fn fn)
{
    c->data = pk_buf_steal(p, NULL);
    c->free_data = free;
    c->work = fn;
    return NULL;
}

static pk_err *sampling_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(a, "prompt");
    if (!cJSON_IsString(p)) return pk_err_invalid("argument prompt (string) is required");
    pk_err *e = need_cap(c, true);
    if (e) return e;
    pk_buf b = PK_BUF_INIT;
    pk_buf_puts(&b, "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"");
    pk_json_escape(&b, p->valuestring, strlen(p->valuestring));
    pk_buf_puts(&b, "\"}}],\"maxTokens\":100}");
    return with_params(c, &b, sampling_work);
}

static pk_err *elicit_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(a, "message");
    if (!cJSON_IsString(m)) return pk_err_invalid("argument message (string) is required");
    pk_err *e = need_cap(c, false);
    if (e) return e;
    pk_buf b = PK_BUF_INIT;
    pk_buf_puts(&b, "{\"message\":\"");
    pk_json_escape(&b, m->valuestring, strlen(m->valuestring));
    pk_buf_puts(
        &b, "\",\"requestedSchema\":{\"type\":\"object\",\"properties\":{\"username\":{\"type\":\"string\","
            "\"description\":\"User's response\"},\"email\":{\"type\":\"string\",\"description\":\"User's "
            "email address\"}},\"required\":[\"username\",\"email\"]}}");
    return with_params(c, &b, elicit_work);
}

static pk_err *elicit_defaults_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    pk_err *e = need_cap(c, false);
    if (e) return e;
    pk_buf b = PK_BUF_INIT;
    pk_buf_puts(
        &b, "{\"message\":\"Please review and update the form fields with defaults\",\"requestedSchema\":{"
            "\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"description\":\"User "
            "name\",\"default\":\"John Doe\"},\"age\":{\"type\":\"integer\",\"description\":\"User age\","
            "\"default\":30},\"score\":{\"type\":\"number\",\"description\":\"User score\",\"default\":95.5},"
            "\"status\":{\"type\":\"string\",\"description\":\"User status\",\"enum\":[\"active\","
            "\"inactive\",\"pending\"],\"default\":\"active\"},\"verified\":{\"type\":\"boolean\","
            "\"description\":\"Verification status\",\"default\":true}},\"required\":[]}}");
    return with_params(c, &b, elicit_done_work);
}

static pk_err *elicit_enums_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    pk_err *e = need_cap(c, false);
    if (e) return e;
    pk_buf b = PK_BUF_INIT;
    pk_buf_puts(
        &b, "{\"message\":\"Please select options from the enum fields\",\"requestedSchema\":{\"type\":"
            "\"object\",\"properties\":{"
            "\"untitledSingle\":{\"type\":\"string\",\"description\":\"Select one option\",\"enum\":["
            "\"option1\",\"option2\",\"option3\"]},"
            "\"titledSingle\":{\"type\":\"string\",\"description\":\"Select one option with titles\","
            "\"oneOf\":[{\"const\":\"value1\",\"title\":\"First Option\"},{\"const\":\"value2\",\"title\":"
            "\"Second Option\"},{\"const\":\"value3\",\"title\":\"Third Option\"}]},"
            "\"legacyEnum\":{\"type\":\"string\",\"description\":\"Select one option (legacy)\",\"enum\":["
            "\"opt1\",\"opt2\",\"opt3\"],\"enumNames\":[\"Option One\",\"Option Two\",\"Option Three\"]},"
            "\"untitledMulti\":{\"type\":\"array\",\"description\":\"Select multiple options\",\"minItems\":"
            "1,\"items\":{\"type\":\"string\",\"enum\":[\"option1\",\"option2\",\"option3\"]}},"
            "\"titledMulti\":{\"type\":\"array\",\"description\":\"Select multiple options with titles\","
            "\"minItems\":1,\"items\":{\"anyOf\":[{\"const\":\"value1\",\"title\":\"First Choice\"},{"
            "\"const\":\"value2\",\"title\":\"Second Choice\"},{\"const\":\"value3\",\"title\":\"Third "
            "Choice\"}]}}},\"required\":[]}}");
    return with_params(c, &b, elicit_done_work);
}

/* test_reconnection: closes the SSE stream before answering; the answer waits in the stream's event
 * log until the client reconnects with Last-Event-ID. */
static void reconnection_work(pk_mcp_call *c, pk_job *j)
{
    pk_mcp_call_sleep(c, 50);
    if (c->s->tx->disconnect) c->s->tx->disconnect(c->s, c);
    pk_mcp_call_sleep(c, 200);
    const char *r = "{\"content\":[{\"type\":\"text\",\"text\":\"Reconnection test completed\"}]}";
    pk_mcp_call_reply(c, r, strlen(r));
}
static pk_err *reconnection_tool(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return async(c, reconnection_work);
}

const mcp_tool pk_mcp_fixture_tools[] = {
    {"test_simple_text", NULL, "Returns a simple text response (conformance fixture).", NO_ARGS, NULL, NULL,
     simple_text, false},
    {"test_image_content", NULL, "Returns an image (conformance fixture).", NO_ARGS, NULL, NULL, image,
     false},
    {"test_audio_content", NULL, "Returns audio (conformance fixture).", NO_ARGS, NULL, NULL, audio, false},
    {"test_embedded_resource", NULL, "Returns an embedded resource (conformance fixture).", NO_ARGS, NULL,
     NULL, embedded, false},
    {"test_multiple_content_types", NULL, "Returns text, image and resource (conformance fixture).", NO_ARGS,
     NULL, NULL, mixed, false},
    {"test_tool_with_logging", NULL, "Sends three log messages while it runs (conformance fixture).", NO_ARGS,
     NULL, NULL, logging_tool, false},
    {"test_tool_with_progress", NULL, "Reports progress 0, 50, 100 (conformance fixture).", NO_ARGS, NULL,
     NULL, progress_tool, false},
    {"test_error_handling", NULL, "Always fails with isError (conformance fixture).", NO_ARGS, NULL, NULL,
     error_tool, false},
    {"test_sampling", NULL, "Asks the client's LLM (sampling/createMessage) (conformance fixture).",
     "{\"type\":\"object\",\"properties\":{\"prompt\":{\"type\":\"string\",\"description\":\"The prompt to "
     "send to "
     "the LLM\"}},\"required\":[\"prompt\"]}",
     NULL, NULL, sampling_tool, false},
    {"test_elicitation", NULL, "Asks the user for input (elicitation/create) (conformance fixture).",
     "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\",\"description\":\"The message to "
     "show "
     "the user\"}},\"required\":[\"message\"]}",
     NULL, NULL, elicit_tool, false},
    {"test_elicitation_sep1034_defaults", NULL, "Elicitation with default values (conformance fixture).",
     NO_ARGS, NULL, NULL, elicit_defaults_tool, false},
    {"test_elicitation_sep1330_enums", NULL, "Elicitation with enum schemas (conformance fixture).", NO_ARGS,
     NULL, NULL, elicit_enums_tool, false},
    {"json_schema_2020_12_tool", NULL, "Tool with JSON Schema 2020-12 features",
     "{\"$schema\":\"https://json-schema.org/draft/2020-12/"
     "schema\",\"type\":\"object\",\"$defs\":{\"address\":{"
     "\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":\"string\"}}}},"
     "\"properties\":{\"name\":{\"type\":\"string\"},\"address\":{\"$ref\":\"#/$defs/address\"}},"
     "\"additionalProperties\":false}",
     NULL, NULL, schema_tool, false},
    {"test_reconnection", NULL, "Closes its SSE stream mid-call to test resumption (conformance fixture).",
     NO_ARGS, NULL, NULL, reconnection_tool, false},
    {"test_slow_operation", NULL, "Runs for `seconds` (default 10) reporting progress; stops when cancelled.",
     "{\"type\":\"object\",\"properties\":{\"seconds\":{\"type\":\"number\",\"minimum\":0,\"maximum\":60}}}",
     NULL, NULL, slow_tool, false},
    {"test_cancelled_count", NULL, "How many test_slow_operation calls were stopped by cancellation.",
     NO_ARGS,
     "{\"type\":\"object\",\"properties\":{\"cancelled\":{\"type\":\"integer\"}},\"required\":[\"cancelled\"]"
     "}",
     NULL, cancelled_count, false},
};
const size_t pk_mcp_fixture_tools_count = sizeof pk_mcp_fixture_tools / sizeof pk_mcp_fixture_tools[0];

/* ---- prompts ---------------------------------------------------------------------------------- */

static pk_err *p_simple(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(
        res, "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"This is a simple "
             "prompt for testing.\"}}]}");
}

static const char *arg(const cJSON *a, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static pk_err *p_args(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    const char *a1 = arg(a, "arg1"), *a2 = arg(a, "arg2");
    if (!a1 || !a2) return pk_err_invalid("arguments arg1 and arg2 are required");
    pk_buf t = PK_BUF_INIT;
    pk_buf_printf(&t, "Prompt with arguments: arg1='%s', arg2='%s'", a1, a2);
    pk_buf_puts(res, "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"");
    pk_json_escape(res, t.data, t.len);
    pk_buf_puts(res, "\"}}]}");
    pk_buf_free(&t);
    return NULL;
}

static pk_err *p_embedded(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    const char *u = arg(a, "resourceUri");
    if (!u) return pk_err_invalid("argument resourceUri is required");
    pk_buf_puts(
        res, "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"resource\",\"resource\":{\"uri\":\"");
    pk_json_escape(res, u, strlen(u));
    pk_buf_puts(
        res,
        "\",\"mimeType\":\"text/plain\",\"text\":\"Embedded resource content for testing.\"}}},{\"role\":"
        "\"user\",\"content\":{\"type\":\"text\",\"text\":\"Please process the embedded resource "
        "above.\"}}]}");
    return NULL;
}

static pk_err *p_image(pk_mcp_call *c, const cJSON *a, pk_req *r, pk_buf *res)
{
    return fixed(res,
                 "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"image\",\"data\":\"" PNG_1PX
                 "\",\"mimeType\":\"image/png\"}},{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":"
                 "\"Please analyze the image above.\"}}]}");
}

const mcp_prompt pk_mcp_fixture_prompts[] = {
    {"test_simple_prompt", NULL, "A simple prompt without arguments (conformance fixture).", "[]", p_simple},
    {"test_prompt_with_arguments", NULL, "A prompt with two arguments (conformance fixture).",
     "[{\"name\":\"arg1\",\"description\":\"First test argument\",\"required\":true},{\"name\":\"arg2\","
     "\"description\":\"Second test argument\",\"required\":true}]",
     p_args},
    {"test_prompt_with_embedded_resource", NULL, "A prompt embedding a resource (conformance fixture).",
     "[{\"name\":\"resourceUri\",\"description\":\"URI of the resource to embed\",\"required\":true}]",
     p_embedded},
    {"test_prompt_with_image", NULL, "A prompt with an image (conformance fixture).", "[]", p_image},
};
const size_t pk_mcp_fixture_prompts_count = sizeof pk_mcp_fixture_prompts / sizeof pk_mcp_fixture_prompts[0];

/* ---- resources -------------------------------------------------------------------------------- */

const mcp_resource pk_mcp_fixture_resources[] = {
    {"test://static-text", "static-text", "A static text resource (conformance fixture).", "text/plain",
     "This is the content of the static text resource.", NULL},
    {"test://static-binary", "static-binary", "A static binary resource (conformance fixture).", "image/png",
     NULL, PNG_1PX},
    {"test://watched-resource", "watched-resource", "A resource to subscribe to (conformance fixture).",
     "text/plain", "Watched resource content.", NULL},
};
const size_t pk_mcp_fixture_resources_count =
    sizeof pk_mcp_fixture_resources / sizeof pk_mcp_fixture_resources[0];

bool pk_mcp_fixture_template_read(const char *uri, pk_buf *contents)
{
    static const char P[] = "test://template/", S[] = "/data";
    size_t n = strlen(uri);
    if (strncmp(uri, P, sizeof P - 1) || n <= sizeof P - 1 + sizeof S - 1 ||
        strcmp(uri + n - (sizeof S - 1), S))
        return false;
    const char *id = uri + sizeof P - 1;
    size_t idn = n - (sizeof P - 1) - (sizeof S - 1);
    if (memchr(id, '/', idn)) return false;
    pk_buf t = PK_BUF_INIT;
    pk_buf_puts(&t, "{\"id\":\"");
    pk_json_escape(&t, id, idn);
    pk_buf_puts(&t, "\",\"templateTest\":true,\"data\":\"Data for ID: ");
    pk_json_escape(&t, id, idn);
    pk_buf_puts(&t, "\"}");
    pk_buf_puts(contents, "{\"contents\":[{\"uri\":\"");
    pk_json_escape(contents, uri, n);
    pk_buf_puts(contents, "\",\"mimeType\":\"application/json\",\"text\":\"");
    pk_json_escape(contents, t.data, t.len);
    pk_buf_puts(contents, "\"}]}");
    pk_buf_free(&t);
    return true;
}
