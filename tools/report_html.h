/* A self-contained HTML page for the report of `sqz compress` (the object written by
 * --json): a summary table, a per-layer heat map of the chosen types, predicted against
 * measured ΔL per tensor, bytes per layer and perplexity per round. Charts are inline SVG
 * and the style is inline CSS: the page loads nothing from anywhere.
 *
 * Any field of the report may be null or missing; what is absent is shown as "not
 * measured". The same report gives the same bytes. */
#ifndef SQZ_TOOLS_REPORT_HTML_H
#define SQZ_TOOLS_REPORT_HTML_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Writes a self-contained HTML page describing a compress report to path, atomically
 * (a temporary "<path>.tmp.<pid>" renamed into place, as every sqz output). Returns 0,
 * or -1 with a one-line message (naming the path where the file is at fault) in err. */
int report_html_write(const cJSON *report, const char *path, char *err, size_t err_len);

#endif
