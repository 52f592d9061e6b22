/* The clad report: one self-contained HTML page (inline CSS and SVG, no external resources) drawn from a
 * report document, the JSON that daemon/api_report.c assembles:
 *
 *   {"base": "mlp", "clad_version": "0.1.0",
 *    "matrix":   as GET /v1/bases/{name}/matrix ({"tasks": [...], "rows": [{"after", "cells"}], "cross": [...]}),
 *    "versions": [version JSON with lineage, in commit order],
 *    "aliases":  {"task": [{"alias", "action", "from", "to", "time_ms", "reason"}, ...]}}
 *
 * Plots (each an <svg> with a stable id, drawn even when empty so the page's shape never changes):
 *   plot-matrix    the accuracy matrix as a heatmap (rows: after which version; columns: tasks)
 *   plot-ranks     LoRA rank per layer (columns) for each version (rows)
 *   plot-overlap   each version's overlap with the earlier tasks it was compared with
 *   plot-distance  each version's distance to the base and novelty, as bars
 *   plot-params    adapter parameters per version along the stream, with the running total
 *   plot-aliases   each alias's history as a timeline
 * A small inline script marks <html data-plots="ok"> once every plot is present (and "error" on a script
 * error), so a headless browser can check the page.
 */
#ifndef CLAD_IO_REPORT_HTML_H
#define CLAD_IO_REPORT_HTML_H

#include <jansson.h>
#include <stddef.h>

#include "core/error.h"

/* Renders doc to a heap buffer (*html, *len; free with free). CLAD_ENOMEM. Missing fields draw as "no data". */
int report_html_render(const json_t *doc, char **html, size_t *len, clad_err *err);

#endif
