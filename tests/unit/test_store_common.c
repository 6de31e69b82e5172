/* Backend-neutral store helpers: search text to FTS5, cursors, input canonicalisation. */
#include "store/store_internal.h"
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static char *fts(const char *text)
{
    pk_buf b = PK_BUF_INIT;
    pk_err *e = pk_fts5_query(text, &b);
    if (e) {
        pk_err_free(e);
        pk_buf_free(&b);
        return NULL;
    }
    return pk_buf_steal(&b, NULL);
}

static void fts_is(const char *text, const char *want)
{
    char *got = fts(text);
    cr_assert_not_null(got, "no query for [%s]", text);
    cr_assert_str_eq(got, want, "for [%s]", text);
    free(got);
}

Test(fts5_query, words_phrases_prefixes)
{
    fts_is("hello", "\"hello\"");
    fts_is("  hello   world ", "\"hello\" \"world\"");
    fts_is("\"exact phrase\" then", "\"exact phrase\" \"then\"");
    fts_is("pre*", "\"pre\"*");
    fts_is("unclosed \"rest of it", "\"unclosed\" \"rest of it\"");
    fts_is("título café", "\"título\" \"café\"");
}

Test(fts5_query, operators_become_words)
{
    fts_is("a OR b", "\"a\" \"OR\" \"b\"");
    fts_is("title:x", "\"title:x\"");
    fts_is("NEAR(a b)", "\"NEAR(a\" \"b)\"");
    fts_is("x \" OR \"y", "\"x\" \" OR \" \"y\"");
    fts_is("-- && foo ||", "\"foo\"");
}

Test(fts5_query, rejects_empty_and_too_long)
{
    cr_assert_null(fts(""));
    cr_assert_null(fts("   "));
    cr_assert_null(fts("* - \"\""));
    cr_assert_null(fts(NULL));
    char big[33 * 3 + 1] = "";
    for (int i = 0; i < 33; i++)
        strcat(big, "ab ");
    cr_assert_null(fts(big));
    big[32 * 3] = '\0';
    char *ok = fts(big);
    cr_assert_not_null(ok);
    free(ok);
}

Test(cursor, round_trips_and_rejects_tampering)
{
    const char *values[] = {"", "123", "0.30000000000000004", "title|with|bars", "ünïcode"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char *tok = pk_cursor_encode("t+", 42 + (int64_t)i, values[i]);
        for (const char *p = tok; *p; p++)
            cr_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p),
                      "not url-safe: %s", tok);
        int64_t seq = 0;
        char *v = NULL;
        cr_assert_null(pk_cursor_decode(tok, "t+", &seq, &v));
        cr_assert_eq(seq, 42 + (int64_t)i);
        cr_assert_str_eq(v, values[i]);
        free(v);
        pk_err *e = pk_cursor_decode(tok, "t-", &seq, &v);
        cr_assert_not_null(e, "cursor accepted for another sort");
        cr_assert_str_eq(e->code, "validation_failed");
        pk_err_free(e);
        free(tok);
    }
    const char *bad[] = {"", "!!!", "A", "dCt8", "dCt8LTF8eA"}; /* garbage, short, "t+|", "t+|-1|x" */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t seq;
        char *v = NULL;
        pk_err *e = pk_cursor_decode(bad[i], "t+", &seq, &v);
        cr_assert_not_null(e, "accepted [%s]", bad[i]);
        cr_assert_null(v);
        pk_err_free(e);
    }
}

Test(note_input, canonicalises_json_fields)
{
    pk_note_input in = {.set = PK_NF_TAGS | PK_NF_METADATA | PK_NF_GUARD,
                        .tags_json = " [ \"x\" , \"y\", \"x\" ] ",
                        .metadata_json = "{ \"a\" : [1, 2.5, true, null] }",
                        .guard_json = "{\"flagged\": true}"};
    pk_note_canon c;
    cr_assert_null(pk_note_input_check(&in, false, &c));
    cr_assert_str_eq(c.tags_json, "[\"x\",\"y\"]");
    cr_assert_eq(c.ntags, 2);
    cr_assert_str_eq(c.metadata_json, "{\"a\":[1,2.5,true,null]}");
    cr_assert(c.flagged);
    pk_note_canon_free(&c);
    in.guard_json = "{\"flagged\": \"yes\"}";
    cr_assert_null(pk_note_input_check(&in, false, &c));
    cr_assert_not(c.flagged, "only a JSON true flags a note");
    pk_note_canon_free(&c);
}

Test(note_input, create_requires_a_title)
{
    pk_note_input in = {.set = PK_NF_CONTENT, .content = "x"};
    pk_note_canon c;
    pk_err *e = pk_note_input_check(&in, true, &c);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->fields[0].field, "title");
    pk_err_free(e);
    cr_assert_null(pk_note_input_check(&in, false, &c), "a patch may omit the title");
    pk_note_canon_free(&c);
    in = (pk_note_input){.set = PK_NF_TITLE, .title = ""};
    e = pk_note_input_check(&in, false, &c);
    cr_assert_not_null(e, "an empty title is rejected");
    pk_err_free(e);
}

Test(link_type, allowed_characters)
{
    cr_assert(pk_link_type_valid("related"));
    cr_assert(pk_link_type_valid("is-part_of2"));
    cr_assert_not(pk_link_type_valid(""));
    cr_assert_not(pk_link_type_valid("Related"));
    cr_assert_not(pk_link_type_valid("a b"));
    cr_assert_not(pk_link_type_valid(NULL));
    char long_type[66];
    memset(long_type, 'a', 65);
    long_type[65] = '\0';
    cr_assert_not(pk_link_type_valid(long_type));
}
