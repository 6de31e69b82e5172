/* The built-in AI operations as pure functions: the local embedder (deterministic, unit length,
 * related texts closer than unrelated ones, sub-word matching) and the extractive summariser
 * (on-topic sentences kept in document order, limits on sentences and characters, Markdown markers). */
#include "core/buf.h"
#include "tasks/tasks.h"
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static float cosine(const char *a, const char *b)
{
    float va[PK_EMBED_DIMS], vb[PK_EMBED_DIMS];
    pk_embed_text(a, strlen(a), va);
    pk_embed_text(b, strlen(b), vb);
    float s = 0;
    for (int i = 0; i < PK_EMBED_DIMS; i++)
        s += va[i] * vb[i];
    return s;
}

Test(embed, deterministic_and_unit_length)
{
    const char *t = "Plants turn sunlight into sugar.";
    float a[PK_EMBED_DIMS], b[PK_EMBED_DIMS];
    pk_embed_text(t, strlen(t), a);
    pk_embed_text(t, strlen(t), b);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    double n = 0;
    int nonzero = 0;
    for (int i = 0; i < PK_EMBED_DIMS; i++) {
        n += (double)a[i] * a[i];
        nonzero += a[i] != 0;
    }
    cr_assert_float_eq(n, 1.0, 1e-5);
    cr_assert_gt(nonzero, 20, "features spread over many dimensions");
    cr_assert_float_eq(cosine(t, "PLANTS turn sunlight, into sugar!"), 1.0, 1e-5,
                       "case and punctuation do not matter");
}

Test(embed, empty_text_is_zero)
{
    float v[PK_EMBED_DIMS];
    pk_embed_text("  ... !!", 8, v);
    for (int i = 0; i < PK_EMBED_DIMS; i++)
        cr_assert_eq(v[i], 0.0f);
}

Test(embed, related_texts_are_closer)
{
    const char *q = "how do leaves absorb light";
    float near = cosine(q, "Chlorophyll in the leaves absorbs red and blue light.");
    float far = cosine(q, "Espresso forces hot water through finely ground coffee.");
    cr_assert_gt(near, far + 0.2f, "near %f far %f", near, far);
    /* inflections share character trigrams */
    cr_assert_gt(cosine("embedding", "embeddings"), cosine("embedding", "bicycle") + 0.2f);
    cr_assert_gt(cosine("photosynthesis", "photosynthetic"), cosine("photosynthesis", "espresso") + 0.2f);
    /* word order: bigrams make "dog bites man" differ from "man bites dog" */
    cr_assert_lt(cosine("dog bites man", "man bites dog"), 0.999f);
}

Test(summarize, keeps_on_topic_sentences_in_order)
{
    const char *t =
        "Plants turn sunlight into sugar through photosynthesis. My neighbour owns a red bicycle. "
        "Chlorophyll in the leaves absorbs light for photosynthesis. Photosynthesis fixes carbon "
        "into sugar in the Calvin cycle.";
    pk_buf out = PK_BUF_INIT;
    int n = pk_summarize(t, strlen(t), 2, 1000, &out);
    cr_assert_eq(n, 2);
    cr_assert_null(strstr(out.data, "bicycle"), "%s", out.data);
    cr_assert(strstr(out.data, "Plants turn sunlight"), "%s", out.data);
    const char *a = strstr(out.data, "Plants"), *b = strstr(out.data, "Chlorophyll")
                                                         ? strstr(out.data, "Chlorophyll")
                                                         : strstr(out.data, "Photosynthesis fixes");
    cr_assert(a && b && a < b, "document order: %s", out.data);
    pk_buf_free(&out);
}

Test(summarize, limits_and_markdown)
{
    const char *t =
        "# Heading line\n- first item here\n- second item here\n\nA closing paragraph about items.";
    pk_buf out = PK_BUF_INIT;
    int n = pk_summarize(t, strlen(t), 10, 1000, &out);
    cr_assert_eq(n, 4);
    cr_assert_null(strchr(out.data, '#'));
    cr_assert_null(strstr(out.data, "- "));
    pk_buf_reset(&out);
    n = pk_summarize(t, strlen(t), 10, 30, &out);
    cr_assert_lt(n, 4);
    cr_assert_leq(out.len, 40);
    pk_buf_reset(&out);
    cr_assert_eq(pk_summarize("", 0, 3, 100, &out), 0);
    cr_assert_eq(out.len, 0);
    pk_buf_free(&out);
}
