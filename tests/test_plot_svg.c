/* test_plot_svg.c — the SVG line-chart writer (src/eval/plot_svg.c), read back from its text.
 *
 * 1. Linear axes: a given x range maps onto the plot's edges, larger y is higher, a point whose y
 *    is not finite is left out of its line, every series has its legend entry and colour.
 * 2. Log axes: ticks at 16, 32, 64, 128 are evenly spaced; a y above the clip is drawn at the clip
 *    and the note says so; the reference line is dashed and labelled; markers carry tooltips.
 * 3. Text is escaped (a title with < & " stays well-formed); the document is one <svg> element.
 * 4. plot_svg_write writes the same document atomically, and a missing folder is an error naming
 *    the path.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "eval/plot_svg.h"

static char *render(const plot_params *p, const plot_series *s, int n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL, "open_memstream");
    plot_svg_print(f, p, s, n);
    fclose(f);
    return buf;
}

/* The points of the k-th polyline (0-based) into xy (pairs); returns how many points. */
static int polyline(const char *svg, int k, double *xy, int cap) {
    const char *p = svg;
    for (int i = 0; i <= k; i++) {
        p = strstr(p, "<polyline");
        REQUIRE(p != NULL, "polyline %d missing", k);
        p++;
    }
    p = strstr(p, "points=\"");
    REQUIRE(p != NULL, "polyline %d has no points", k);
    p += 8;
    int n = 0, used;
    while (n < cap && sscanf(p, "%lf,%lf %n", &xy[2 * n], &xy[2 * n + 1], &used) == 2) {
        n++;
        p += used;
    }
    return n;
}

/* The x of the text element whose content is exactly label (a tick label). */
static double text_x(const char *svg, const char *label) {
    char needle[64];
    snprintf(needle, sizeof needle, ">%s</text>", label);
    const char *e = strstr(svg, needle);
    REQUIRE(e != NULL, "no text '%s'", label);
    const char *t = e;
    while (t > svg && strncmp(t, "<text", 5)) t--;
    double x = NAN;
    REQUIRE(sscanf(t, "<text x=\"%lf\"", &x) == 1, "text '%s' has no x", label);
    return x;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_linear(void) {
    const double x[] = {0, 2, 4, 6, 10}, a[] = {5, 4, 3, 2.5, 2}, b[] = {NAN, 4.5, NAN, 3, 2.2};
    const plot_series s[] = {{"train", x, a, 5, "#1f77b4", 1, 0},
                             {"validation", x, b, 5, NULL, 2, 0}};
    const plot_params p = {.title = "loss", .x_label = "step", .x_min = 0, .x_max = 10};
    char *svg = render(&p, s, 2);
    double xy[32];
    CHECK(polyline(svg, 0, xy, 16) == 5, "train: 5 points");
    CHECK(fabs(xy[0] - 70) < 0.05 && fabs(xy[8] - 570) < 0.05,
          "x 0 and 10 on the plot's left and right edges: %.1f %.1f", xy[0], xy[8]);
    CHECK(xy[1] < xy[3] && xy[3] < xy[5], "a larger loss is drawn higher: %.1f %.1f %.1f", xy[1],
          xy[3], xy[5]);
    CHECK(fabs(xy[1] - 40) < 0.05 && fabs(xy[9] - 410) < 0.05,
          "the y range spans the data, top to bottom: %.1f %.1f", xy[1], xy[9]);
    CHECK(polyline(svg, 1, xy, 16) == 3, "validation: the 2 NaN points are left out");
    CHECK(strstr(svg, "fill=\"#1f77b4\">train</text>") && strstr(svg, ">validation</text>"),
          "legend entries");
    CHECK(strstr(svg, "stroke=\"#1f77b4\" stroke-width=\"1\"") != NULL, "train's colour and width");
    CHECK(strstr(svg, ">step</text>") && strstr(svg, ">loss</text>"), "labels");
    CHECK(!strstr(svg, "clipped") && !strstr(svg, "dasharray") && !strstr(svg, "<circle"),
          "no clip note, reference line or markers unless asked");
    CHECK(!strncmp(svg, "<svg ", 5) && count(svg, "<svg") == 1 &&
              !strcmp(svg + strlen(svg) - 7, "</svg>\n"),
          "one svg element");
    free(svg);
}

static void test_log(void) {
    const double k[] = {16, 32, 64, 128}, tova[] = {80, 75, 73, 69}, window[] = {900, 300, 67, 66};
    const plot_series s[] = {{"tova", k, tova, 4, NULL, 2, 1},
                             {"window", k, window, 4, NULL, 2, 1}};
    const plot_params p = {.title = "m<1> & \"q\": ppl",
                           .y_label = "perplexity",
                           .x_log = 1,
                           .y_log = 1,
                           .x_min = 16 / 1.25,
                           .x_max = 128 * 1.25,
                           .x_ticks = k,
                           .n_x_ticks = 4,
                           .x_symbol = "k",
                           .y_clip = 4 * 66.1,
                           .ref_label = "full 66.10",
                           .ref_y = 66.1};
    char *svg = render(&p, s, 2);
    const double x16 = text_x(svg, "16"), x32 = text_x(svg, "32"), x64 = text_x(svg, "64"),
                 x128 = text_x(svg, "128");
    CHECK(fabs((x32 - x16) - (x64 - x32)) < 0.15 && fabs((x128 - x64) - (x64 - x32)) < 0.15,
          "log x: ticks evenly spaced: %.1f %.1f %.1f %.1f", x16, x32, x64, x128);
    double w[8], t[8];
    REQUIRE(polyline(svg, 1, w, 4) == 4 && polyline(svg, 0, t, 4) == 4, "4 points each");
    CHECK(fabs(w[1] - w[3]) < 0.05, "900 and 300 are both clipped at 4x full: %.1f %.1f", w[1],
          w[3]);
    CHECK(w[1] < t[1], "the clipped points are the highest");
    CHECK(strstr(svg, "values above 264.4 clipped") != NULL, "the clip note");
    CHECK(strstr(svg, "stroke-dasharray") && strstr(svg, ">full 66.10</text>"),
          "the dashed reference line and its label");
    CHECK(count(svg, "<circle") == 8 && strstr(svg, "<title>tova k=64: 73.000</title>"),
          "a marker per point with its tooltip");
    CHECK(strstr(svg, "m&lt;1&gt; &amp; &quot;q&quot;: ppl") && !strstr(svg, "m<1>"),
          "the title is escaped");
    CHECK(fabs(t[0] - text_x(svg, "16")) < 0.05, "the first point is at its tick");
    free(svg);
}

static void test_write(void) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/test_plot_svg.XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/p.svg", dir);
    snprintf(bad, sizeof bad, "%s/absent/p.svg", dir);
    const double x[] = {1, 2}, y[] = {3, 4};
    const plot_series s = {"s", x, y, 2, NULL, 0, 0};
    const plot_params p = {.title = "t"};
    REQUIRE_OK(plot_svg_write(path, &p, &s, 1));
    char *want = render(&p, &s, 1);
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL, "%s not written", path);
    char got[8192];
    size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = 0;
    fclose(f);
    CHECK(!strcmp(got, want), "the file differs from the printed document");
    free(want);
    CHECK(plot_svg_write(bad, &p, &s, 1) == MSRNN_ERR_IO &&
              strstr(msrnn_last_error(), "absent/p.svg"),
          "missing folder: %s", msrnn_last_error());
    int left = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d));) left += e->d_name[0] != '.';
    closedir(d);
    CHECK(left == 1, "%d files in the folder, expected only p.svg", left);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_linear();
    test_log();
    test_write();
    printf("test_plot_svg: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
