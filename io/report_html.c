/* The clad report page; see report_html.h. Everything is drawn here, in C, as inline SVG. */
#include "io/report_html.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_MAX 96

typedef char label[LABEL_MAX];

/* A table of numbers with row and column names; NAN marks an empty cell. */
typedef struct grid {
    size_t rows, cols;
    label *row, *col;
    double *v; /* rows x cols */
} grid;

static void grid_init(grid *g, size_t rows, size_t cols)
{
    g->rows = rows;
    g->cols = cols;
    g->row = calloc(rows ? rows : 1, sizeof *g->row);
    g->col = calloc(cols ? cols : 1, sizeof *g->col);
    g->v = malloc((rows * cols > 0 ? rows * cols : 1) * sizeof *g->v);
    if (!g->row || !g->col || !g->v) abort(); /* bounded by the store's contents */
    for (size_t i = 0; i < rows * cols; i++) g->v[i] = NAN;
}

static void grid_finish(grid *g)
{
    free(g->row);
    free(g->col);
    free(g->v);
}

/* Text escaped for HTML and SVG. */
static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static double jnum(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : (double)NAN;
}

static void version_label(label out, const json_t *v)
{
    snprintf(out, LABEL_MAX, "%s@%lld", jstr(v, "task"), (long long)json_integer_value(json_object_get(v, "version")));
}

/* White (t = 0) to dark blue (t = 1). */
static void color(double t, char out[8])
{
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    int r = (int)lround(247 + t * (8 - 247)), g = (int)lround(251 + t * (48 - 251)), b = (int)lround(255 + t * (107 - 255));
    snprintf(out, 8, "#%02x%02x%02x", r, g, b);
}

static size_t longest(const label *l, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(l[i]) > m) m = strlen(l[i]);
    return m;
}

static void svg_open(FILE *f, const char *id, double w, double h, const char *caption)
{
    fprintf(f, "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "role=\"img\" aria-label=\"", id, w, h, w, h);
    esc(f, caption);
    fputs("\">\n", f);
}

static void svg_empty(FILE *f, const char *id, const char *caption, const char *why)
{
    svg_open(f, id, 420, 40, caption);
    fputs("<text x=\"8\" y=\"24\" class=\"empty\">", f);
    esc(f, why);
    fputs("</text></svg>\n", f);
}

/* A heatmap of g, colours scaled from vmin to vmax, values printed with fmt. */
static void heatmap(FILE *f, const char *id, const char *caption, const grid *g, double vmin, double vmax, const char *fmt,
                    const char *empty_why)
{
    if (!g->rows || !g->cols) {
        svg_empty(f, id, caption, empty_why);
        return;
    }
    const double cw = 56, ch = 22;
    double left = 12 + 7.0 * (double)longest(g->row, g->rows), top = 14 + 6.5 * (double)longest(g->col, g->cols);
    svg_open(f, id, left + cw * (double)g->cols + 10, top + ch * (double)g->rows + 10, caption);
    for (size_t c = 0; c < g->cols; c++) {
        fprintf(f, "<text class=\"col\" transform=\"translate(%.1f,%.1f) rotate(-60)\">", left + cw * ((double)c + 0.5), top - 6);
        esc(f, g->col[c]);
        fputs("</text>\n", f);
    }
    for (size_t r = 0; r < g->rows; r++) {
        fprintf(f, "<text class=\"row\" x=\"%.1f\" y=\"%.1f\">", left - 6, top + ch * ((double)r + 0.7));
        esc(f, g->row[r]);
        fputs("</text>\n", f);
        for (size_t c = 0; c < g->cols; c++) {
            double v = g->v[r * g->cols + c], x = left + cw * (double)c, y = top + ch * (double)r;
            if (isnan(v)) {
                fprintf(f, "<rect class=\"none\" x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\"/>\n", x, y, cw - 1, ch - 1);
                continue;
            }
            double t = vmax > vmin ? (v - vmin) / (vmax - vmin) : 1;
            char fill[8], text[32];
            color(t, fill);
            snprintf(text, sizeof text, fmt, v);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\"><title>", x, y, cw - 1, ch - 1, fill);
            esc(f, g->row[r]);
            fputs(" / ", f);
            esc(f, g->col[c]);
            fprintf(f, ": %s</title></rect><text class=\"cell%s\" x=\"%.1f\" y=\"%.1f\">%s</text>\n", text, t > 0.55 ? " dark" : "",
                    x + cw / 2, y + ch * 0.68, text);
        }
    }
    fputs("</svg>\n", f);
}

/* Bars for values[0..n) inside the box (x, y, w, h) with a title line; labels under the bars when given. */
static void bar_panel(FILE *f, double x, double y, double w, double h, const double *values, const label *labels, size_t n,
                      const char *title, const char *fmt)
{
    double vmax = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(values[i]) && values[i] > vmax) vmax = values[i];
    char top[32];
    snprintf(top, sizeof top, fmt, vmax);
    fprintf(f, "<text class=\"title\" x=\"%.1f\" y=\"%.1f\">", x, y + 12);
    esc(f, title);
    fprintf(f, " (max %s)</text>\n<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", top, x,
            y + h, x + w, y + h);
    double bw = n ? w / (double)n : w, plot_h = h - 20;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(values[i])) continue;
        double bh = vmax > 0 ? plot_h * values[i] / vmax : 0;
        char text[32];
        snprintf(text, sizeof text, fmt, values[i]);
        fprintf(f, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"><title>", x + bw * (double)i + 2,
                y + h - bh, bw - 4 > 1 ? bw - 4 : 1, bh);
        if (labels) esc(f, labels[i]);
        fprintf(f, ": %s</title></rect>\n", text);
    }
    if (labels)
        for (size_t i = 0; i < n; i++) {
            fprintf(f, "<text class=\"col\" transform=\"translate(%.1f,%.1f) rotate(50)\">", x + bw * ((double)i + 0.5) - 4, y + h + 8);
            esc(f, labels[i]);
            fputs("</text>\n", f);
        }
}

/* Version v's lineage.plan.<field> (an object keyed by layer or by task version). */
static const json_t *plan_part(const json_t *v, const char *field)
{
    return json_object_get(json_object_get(json_object_get(v, "lineage"), "plan"), field);
}

/* Rows: the versions; columns: the keys of their plan.<field> in first-seen order (at most `cap`); no rows
 * when no version has a key. */
static void plan_grid(grid *g, const json_t *versions, const char *field, size_t cap)
{
    size_t n = json_array_size(versions), cols = 0;
    label *keys = calloc(cap, sizeof *keys);
    if (!keys) abort();
    for (size_t i = 0; i < n; i++) {
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)plan_part(json_array_get(versions, i), field), key, x) {
            size_t c = 0;
            while (c < cols && strcmp(keys[c], key)) c++;
            if (c == cols && cols < cap) snprintf(keys[cols++], LABEL_MAX, "%s", key);
        }
    }
    grid_init(g, cols ? n : 0, cols);
    for (size_t i = 0; i < g->rows; i++) {
        const json_t *v = json_array_get(versions, i), *part = plan_part(v, field);
        version_label(g->row[i], v);
        for (size_t c = 0; c < cols; c++) g->v[i * cols + c] = jnum(part, keys[c]);
    }
    memcpy(g->col, keys, cols * sizeof *keys);
    free(keys);
}

/* Rows: every version; columns: the union of the layers of their plans, in first-seen order. */
static void ranks_plot(FILE *f, const json_t *versions)
{
    grid g;
    plan_grid(&g, versions, "ranks", 256);
    double vmax = 1;
    for (size_t k = 0; k < g.rows * g.cols; k++)
        if (g.v[k] > vmax) vmax = g.v[k];
    heatmap(f, "plot-ranks", "LoRA rank per layer and version", &g, 0, vmax, "%.0f",
            "no version has a rank plan yet (fusion and merged versions have none)");
    grid_finish(&g);
}

/* Rows: versions; columns: the earlier task versions each was compared with (plan.overlap). */
static void overlap_plot(FILE *f, const json_t *versions)
{
    grid g;
    plan_grid(&g, versions, "overlap", 512);
    heatmap(f, "plot-overlap", "overlap of each version with the earlier tasks", &g, 0, 1, "%.2f",
            "no version was compared with an earlier task yet");
    grid_finish(&g);
}

/* Two bar panels over the stream: distance to the base and novelty, from each version's plan. */
static void distance_plot(FILE *f, const json_t *versions)
{
    size_t n = json_array_size(versions);
    if (!n) {
        svg_empty(f, "plot-distance", "distance and novelty per version", "no versions yet");
        return;
    }
    double *d = malloc(2 * n * sizeof *d);
    label *names = calloc(n, sizeof *names);
    if (!d || !names) abort();
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(versions, i), *plan = json_object_get(json_object_get(v, "lineage"), "plan");
        version_label(names[i], v);
        d[i] = jnum(plan, "distance");
        d[n + i] = jnum(plan, "novelty");
    }
    double w = 40.0 * (double)n + 20 < 320 ? 320 : 40.0 * (double)n + 20, lab = 6.5 * (double)longest(names, n) + 20;
    svg_open(f, "plot-distance", w + 20, 280 + lab, "distance and novelty per version");
    bar_panel(f, 10, 4, w, 120, d, NULL, n, "distance to the base", "%.4f");
    bar_panel(f, 10, 140, w, 120, d + n, names, n, "novelty (share of new directions)", "%.3f");
    fputs("</svg>\n", f);
    free(d);
    free(names);
}

/* Adapter parameters per version along the stream, with the running total as a line. */
static void params_plot(FILE *f, const json_t *versions)
{
    size_t n = json_array_size(versions);
    if (!n) {
        svg_empty(f, "plot-params", "adapter parameters along the stream", "no versions yet");
        return;
    }
    double *p = malloc(n * sizeof *p), total = 0;
    label *names = calloc(n, sizeof *names);
    if (!p || !names) abort();
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(versions, i);
        version_label(names[i], v);
        p[i] = jnum(json_object_get(v, "metrics"), "adapter_params");
        if (isfinite(p[i])) total += p[i];
    }
    double w = 40.0 * (double)n + 20 < 320 ? 320 : 40.0 * (double)n + 20, lab = 6.5 * (double)longest(names, n) + 20;
    svg_open(f, "plot-params", w + 20, 180 + lab, "adapter parameters along the stream");
    bar_panel(f, 10, 4, w, 160, p, names, n, "adapter parameters per version", "%.0f");
    /* The running total, scaled to the panel's height. */
    double run = 0, bw = w / (double)n;
    fputs("<polyline class=\"total\" points=\"", f);
    for (size_t i = 0; i < n; i++) {
        run += isfinite(p[i]) ? p[i] : 0;
        fprintf(f, "%.1f,%.1f ", 10 + bw * ((double)i + 0.5), 164 - (total > 0 ? 140 * run / total : 0));
    }
    fprintf(f, "\"><title>running total: %.0f parameters</title></polyline>\n<text class=\"total\" x=\"%.1f\" y=\"%.1f\">"
               "running total %.0f</text>\n</svg>\n", total, 10 + w, 20.0, total);
    free(p);
    free(names);
}

/* One lane per (task, alias); a dot per move at its time, labelled with the version it moved to. */
static void alias_plot(FILE *f, const json_t *aliases)
{
    double t0 = INFINITY, t1 = -INFINITY;
    size_t lanes = 0;
    const char *task;
    json_t *moves, *m;
    size_t i;
    label *lane = calloc(1024, sizeof *lane);
    if (!lane) abort();
    json_object_foreach((json_t *)aliases, task, moves) json_array_foreach(moves, i, m) {
        double t = jnum(m, "time_ms");
        if (t < t0) t0 = t;
        if (t > t1) t1 = t;
        char name[LABEL_MAX];
        snprintf(name, sizeof name, "%s:%s", task, jstr(m, "alias"));
        size_t k = 0;
        while (k < lanes && strcmp(lane[k], name)) k++;
        if (k == lanes && lanes < 1024) snprintf(lane[lanes++], LABEL_MAX, "%s", name);
    }
    if (!lanes) {
        svg_empty(f, "plot-aliases", "alias history", "no alias has moved yet");
        free(lane);
        return;
    }
    const double w = 640, lh = 34;
    double left = 16 + 7.0 * (double)longest(lane, lanes), span = t1 > t0 ? t1 - t0 : 1;
    svg_open(f, "plot-aliases", left + w + 40, lh * (double)lanes + 40, "alias history");
    for (size_t k = 0; k < lanes; k++) {
        double y = 20 + lh * (double)k;
        fprintf(f, "<text class=\"row\" x=\"%.1f\" y=\"%.1f\">", left - 8, y + 4);
        esc(f, lane[k]);
        fprintf(f, "</text><line class=\"lane\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, y, left + w, y);
    }
    json_object_foreach((json_t *)aliases, task, moves) json_array_foreach(moves, i, m) {
        char name[LABEL_MAX];
        snprintf(name, sizeof name, "%s:%s", task, jstr(m, "alias"));
        size_t k = 0;
        while (k < lanes && strcmp(lane[k], name)) k++;
        if (k == lanes) continue;
        double x = left + w * (jnum(m, "time_ms") - t0) / span, y = 20 + lh * (double)k;
        long long to = (long long)json_integer_value(json_object_get(m, "to"));
        fprintf(f, "<circle class=\"move %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"6\"><title>", jstr(m, "action"), x, y);
        fprintf(f, "%s: %lld -&gt; %lld ", jstr(m, "action"), (long long)json_integer_value(json_object_get(m, "from")), to);
        esc(f, jstr(m, "reason"));
        fprintf(f, "</title></circle><text class=\"ver\" x=\"%.1f\" y=\"%.1f\">%s%lld</text>\n", x, y - 9, to ? "v" : "x", to);
    }
    fputs("</svg>\n", f);
    free(lane);
}

/* The accuracy matrix: rows are the versions in commit order, columns the tasks. */
static void matrix_plot(FILE *f, const json_t *matrix)
{
    const json_t *tasks = json_object_get(matrix, "tasks"), *rows = json_object_get(matrix, "rows");
    size_t nr = 0, nc = json_array_size(tasks);
    for (size_t r = 0; r < json_array_size(rows); r++) nr += json_object_size(json_object_get(json_array_get(rows, r), "cells")) > 0;
    grid g;
    grid_init(&g, nr, nr ? nc : 0);
    for (size_t c = 0; c < g.cols; c++) snprintf(g.col[c], LABEL_MAX, "%s", json_string_value(json_array_get(tasks, c)));
    size_t out = 0;
    for (size_t r = 0; r < json_array_size(rows); r++) {
        const json_t *row = json_array_get(rows, r), *cells = json_object_get(row, "cells");
        if (!json_object_size(cells)) continue;
        version_label(g.row[out], json_object_get(row, "after"));
        for (size_t c = 0; c < g.cols; c++) g.v[out * g.cols + c] = jnum(json_object_get(cells, g.col[c]), "accuracy");
        out++;
    }
    heatmap(f, "plot-matrix", "accuracy matrix", &g, 0, 1, "%.3f",
            "no evaluations on the tasks' own data yet (clad eval TASK FILE)");
    grid_finish(&g);
}

static const char style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}"
    "h2{margin-top:32px;border-bottom:1px solid #ddd}svg{display:block;margin:8px 0;overflow:visible}"
    "svg text{font:11px system-ui,sans-serif;fill:#222}text.row{text-anchor:end}text.col{text-anchor:start}"
    "text.cell{text-anchor:middle}text.cell.dark{fill:#fff}text.ver{text-anchor:middle}text.title{font-weight:600}"
    "text.empty{fill:#777;font-style:italic}text.total{fill:#d9822b;text-anchor:end}rect.none{fill:#eee}rect.bar{fill:#4a7fb5}line.axis{stroke:#999}"
    "line.lane{stroke:#ccc;stroke-dasharray:4 3}polyline.total{fill:none;stroke:#d9822b;stroke-width:2}"
    "circle.move{fill:#4a7fb5}circle.rollback,circle.undo{fill:#d9822b}circle.delete{fill:#b33}"
    "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}";

/* Marks the page for headless checks: every plot present, and no script error. */
static const char check_script[] =
    "<script>(function(){var ids=['plot-matrix','plot-ranks','plot-overlap','plot-distance','plot-params',"
    "'plot-aliases'];var ok=ids.every(function(i){var s=document.getElementById(i);"
    "return s&&s.tagName.toLowerCase()==='svg'&&s.childElementCount>0;});"
    "if(document.documentElement.dataset.plots!=='error')document.documentElement.dataset.plots=ok?'ok':'missing';})();"
    "</script>\n";

static void cross_table(FILE *f, const json_t *cross)
{
    if (!json_array_size(cross)) {
        fputs("<p>none</p>\n", f);
        return;
    }
    fputs("<table><tr><th>task@version</th><th>on data of</th><th>data</th><th>accuracy</th><th>loss</th><th>samples</th></tr>\n", f);
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)cross, i, x) {
        fputs("<tr><td>", f);
        esc(f, jstr(x, "task"));
        fprintf(f, "@%lld</td><td>", (long long)json_integer_value(json_object_get(x, "version")));
        esc(f, jstr(x, "data_task"));
        fputs("</td><td>", f);
        esc(f, json_is_string(json_object_get(x, "data_name")) ? jstr(x, "data_name") : jstr(x, "data_sha256"));
        fprintf(f, "</td><td>%.4f</td><td>%.4f</td><td>%lld</td></tr>\n", jnum(x, "accuracy"), jnum(x, "loss"),
                (long long)json_integer_value(json_object_get(x, "samples")));
    }
    fputs("</table>\n", f);
}

int report_html_render(const json_t *doc, char **html, size_t *len, clad_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return clad_err_set(err, CLAD_ENOMEM, "out of memory rendering the report");
    const json_t *versions = json_object_get(doc, "versions"), *matrix = json_object_get(doc, "matrix");
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<script>window.addEventListener('error',function(){document.documentElement.dataset.plots='error';});</script>\n"
          "<title>clad report: ", f);
    esc(f, jstr(doc, "base"));
    fprintf(f, "</title>\n<style>%s</style></head>\n<body>\n<h1>clad report: base ", style);
    esc(f, jstr(doc, "base"));
    fprintf(f, "</h1>\n<p>%zu version(s) of %zu task(s); clad ", json_array_size(versions),
            json_array_size(json_object_get(matrix, "tasks")));
    esc(f, jstr(doc, "clad_version"));
    fputs(".</p>\n<h2>Accuracy matrix</h2>\n<p>Accuracy of each task (columns) on its own test data, measured "
          "when the row's version was the latest on the base.</p>\n", f);
    matrix_plot(f, matrix);
    fputs("<h3>Evaluations on other tasks' data</h3>\n<p>Kept apart from the matrix.</p>\n", f);
    cross_table(f, json_object_get(matrix, "cross"));
    fputs("<h2>Ranks per layer</h2>\n<p>The LoRA rank each version's plan gave each layer.</p>\n", f);
    ranks_plot(f, versions);
    fputs("<h2>Distances and overlaps</h2>\n<p>Each version's distance to the base and the share of its directions "
          "that no earlier task covers, from its rank plan.</p>\n", f);
    distance_plot(f, versions);
    fputs("<p>Overlap of each version (rows) with the earlier task versions it was compared with (columns): 1 means "
          "the same directions.</p>\n", f);
    overlap_plot(f, versions);
    fputs("<h2>Parameters along the stream</h2>\n<p>Adapter parameters each version added, in commit order; the line "
          "is the running total.</p>\n", f);
    params_plot(f, versions);
    fputs("<h2>Alias history</h2>\n<p>Every move of every alias over time, labelled with the version it moved to "
          "(orange: rollbacks and undos, red: deletions).</p>\n", f);
    alias_plot(f, json_object_get(doc, "aliases"));
    fputs(check_script, f);
    fputs("</body></html>\n", f);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return clad_err_set(err, CLAD_ENOMEM, "out of memory rendering the report");
    }
    *html = buf;
    *len = n;
    return 0;
}
