/* The report renderer on its own: every plot is drawn (or says why it is empty), text from users is
 * escaped, and cells land where the document puts them. */
#include <stdlib.h>
#include <string.h>

#include "io/report_html.h"
#include "tests/test.h"

static const char *const plot_ids[] = {"plot-matrix", "plot-ranks", "plot-overlap", "plot-distance", "plot-params", "plot-aliases"};

static char *render(const char *doc_text)
{
    json_error_t je;
    json_t *doc = json_loads(doc_text, 0, &je);
    CHECK_MSG(doc != NULL, "bad test document: %s", je.text);
    char *html = NULL;
    size_t len = 0;
    CHECK_INT_EQ(report_html_render(doc, &html, &len, NULL), 0);
    CHECK_INT_EQ(strlen(html), len);
    json_decref(doc);
    return html;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(report_html_empty_document_draws_every_plot_with_a_reason)
{
    char *html = render("{\"base\": \"b\"}");
    for (size_t i = 0; i < sizeof plot_ids / sizeof plot_ids[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "<svg id=\"%s\"", plot_ids[i]);
        CHECK_MSG(count(html, needle) == 1, "%s drawn %zu times", plot_ids[i], count(html, needle));
    }
    CHECK_INT_EQ(count(html, "class=\"empty\""), 6);
    CHECK(strstr(html, "<!DOCTYPE html>") == html);
    free(html);
}

TEST(report_html_escapes_user_text_and_places_cells)
{
    char *html = render(
        "{\"base\": \"b<i>\", \"clad_version\": \"1\","
        " \"matrix\": {\"tasks\": [\"t1\", \"t2\"],"
        "  \"rows\": [{\"after\": {\"task\": \"t1\", \"version\": 1}, \"cells\": {}},"
        "           {\"after\": {\"task\": \"t2\", \"version\": 1}, \"cells\": {\"t2\": {\"accuracy\": 0.875}}}],"
        "  \"cross\": [{\"task\": \"t1\", \"version\": 1, \"data_task\": \"t2\", \"data_name\": \"<script>x</script>\","
        "             \"accuracy\": 0.5, \"loss\": 1, \"samples\": 10}]},"
        " \"versions\": [{\"task\": \"t1\", \"version\": 1, \"metrics\": {\"adapter_params\": 100},"
        "   \"lineage\": {\"plan\": {\"distance\": 0.1, \"novelty\": 1, \"ranks\": {\"fc1\": 4, \"fc2\": 0}, \"overlap\": {}}}},"
        "  {\"task\": \"t2\", \"version\": 1, \"metrics\": {\"adapter_params\": 50},"
        "   \"lineage\": {\"plan\": {\"distance\": 0.2, \"novelty\": 0.5, \"ranks\": {\"fc1\": 2}, \"overlap\": {\"t1@1\": 0.25}}}}],"
        " \"aliases\": {\"t1\": [{\"alias\": \"active\", \"action\": \"put\", \"from\": 0, \"to\": 1, \"time_ms\": 1000,"
        "   \"reason\": \"\\\"quoted\\\" & <b>\"}]}}");
    CHECK_MSG(!strstr(html, "<script>x") && strstr(html, "&lt;script&gt;x&lt;/script&gt;"), "data name not escaped");
    CHECK(!strstr(html, "b<i>") && strstr(html, "b&lt;i&gt;"));
    CHECK(strstr(html, "&quot;quoted&quot; &amp; &lt;b&gt;") != NULL);
    /* One matrix row (the row without cells is left out), one filled cell and one empty one. */
    CHECK(strstr(html, ">0.875</text>") != NULL);
    /* Empty cells: matrix t2@1/t1, ranks t2@1/fc2, overlap t1@1/t1@1. */
    CHECK_INT_EQ(count(html, "rect class=\"none\""), 3);
    CHECK(strstr(html, ">0.25</text>") != NULL);
    CHECK(strstr(html, "running total 150") != NULL);
    CHECK_INT_EQ(count(html, "class=\"empty\""), 0);
    free(html);
}
