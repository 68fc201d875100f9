/* plot_svg.c — see plot_svg.h. Coordinates: a value v maps to its axis space (v, or log v on a
 * log axis), then linearly onto the plot's pixels; y grows downwards in SVG. */
#include "eval/plot_svg.h"

#include <math.h>
#include <string.h>

#include "base/atomic_file.h"

/* the layout, in pixels */
#define W 720.0
#define H 460.0
#define LEFT 70.0   /* y tick labels and the y label */
#define RIGHT 150.0 /* the legend column */
#define TOP 40.0    /* the title */
#define BOTTOM 50.0 /* x tick labels and the x label */

static const char *const palette[] = {"#d62728", "#ff7f0e", "#2ca02c",
                                      "#1f77b4", "#9467bd", "#8c564b"};

typedef struct {
    int log;
    double lo, hi; /* in axis space */
    double px0, px1;
} axis;

static double axis_space(const axis *a, double v) { return a->log ? log(v) : v; }
static double axis_value(const axis *a, double s) { return a->log ? exp(s) : s; }
static double to_px(const axis *a, double v) {
    return a->px0 + (axis_space(a, v) - a->lo) / (a->hi - a->lo) * (a->px1 - a->px0);
}

/* Text content or an attribute value with XML's special characters escaped. */
static void put_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A tick label: integers in full (cache sizes, steps), anything else to three digits. */
static void put_number(FILE *f, double v) {
    if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.3g", v);
}

static int usable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

/* The range of the data in axis space, padded: a flat range gets room around it, and a log axis
 * 3% either way (so that the extremes do not sit on the frame). */
static void fit_range(axis *a, double lo, double hi) {
    if (!(lo <= hi)) lo = hi = a->log ? 1 : 0; /* no data */
    if (a->log) {
        lo *= 0.97, hi *= 1.03;
    } else if (!(hi > lo)) {
        lo -= 0.5, hi += 0.5;
    }
    a->lo = axis_space(a, lo), a->hi = axis_space(a, hi);
    if (!(a->hi > a->lo)) a->hi = a->lo + 1;
}

void plot_svg_print(FILE *f, const plot_params *p, const plot_series *series, int n_series) {
    const double clip = p->y_clip > 0 ? p->y_clip : INFINITY;
    axis ax = {p->x_log, 0, 1, LEFT, W - RIGHT}, ay = {p->y_log, 0, 1, H - BOTTOM, TOP};

    /* ranges */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            const double x = series[s].x[i], y = fmin(series[s].y[i], clip);
            if (!usable(&ax, x) || !usable(&ay, y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    if (p->ref_label && usable(&ay, p->ref_y))
        ylo = fmin(ylo, fmin(p->ref_y, clip)), yhi = fmax(yhi, fmin(p->ref_y, clip));
    fit_range(&ay, ylo, yhi);
    if (p->x_min < p->x_max && usable(&ax, p->x_min))
        ax.lo = axis_space(&ax, p->x_min), ax.hi = axis_space(&ax, p->x_max);
    else if (ax.log)
        fit_range(&ax, xlo / 1.2, xhi * 1.2);
    else
        fit_range(&ax, xlo, xhi);
#define X(v) to_px(&ax, v)
#define Y(v) to_px(&ay, fmin(v, clip))

    /* frame, title, axes */
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n",
            W, H);
    if (p->title) {
        fprintf(f, "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">",
                (W - RIGHT + LEFT) / 2);
        put_escaped(f, p->title);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", LEFT,
            H - BOTTOM, W - RIGHT, H - BOTTOM);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", LEFT,
            TOP, LEFT, H - BOTTOM);

    /* x ticks: the given values, or 6 evenly spaced in axis space */
    const int n_xt = p->x_ticks ? p->n_x_ticks : 6;
    for (int i = 0; i < n_xt; i++) {
        const double v =
            p->x_ticks ? p->x_ticks[i] : axis_value(&ax, ax.lo + (ax.hi - ax.lo) * i / 5);
        if (!usable(&ax, v)) continue;
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">", X(v), H - BOTTOM + 18);
        put_number(f, v);
        fprintf(f, "</text>\n");
    }
    if (p->x_label) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", (W - RIGHT + LEFT) / 2,
                H - 12);
        put_escaped(f, p->x_label);
        fprintf(f, "</text>\n");
    }

    /* y ticks and grid lines: 6 evenly spaced in axis space */
    for (int i = 0; i <= 5; i++) {
        const double v = axis_value(&ay, ay.lo + (ay.hi - ay.lo) * i / 5), y = to_px(&ay, v);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", LEFT - 6, y + 4,
                v);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                LEFT, y, W - RIGHT, y);
    }
    if (p->y_label) {
        fprintf(f, "<text transform=\"rotate(-90)\" x=\"%.0f\" y=\"16\" text-anchor=\"middle\">",
                -(H - BOTTOM + TOP) / 2);
        put_escaped(f, p->y_label);
        fprintf(f, "</text>\n");
    }

    /* the reference line */
    if (p->ref_label && usable(&ay, p->ref_y)) {
        fprintf(f,
                "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"black\" "
                "stroke-dasharray=\"6,4\"/>\n",
                LEFT, Y(p->ref_y), W - RIGHT, Y(p->ref_y));
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\">", W - RIGHT + 8, Y(p->ref_y) + 4);
        put_escaped(f, p->ref_label);
        fprintf(f, "</text>\n");
    }

    /* the series, each with its legend entry */
    for (int s = 0, auto_color = 0; s < n_series; s++) {
        const plot_series *sr = &series[s];
        const char *col = sr->color ? sr->color : palette[auto_color++ % 6];
        fprintf(f, "<polyline fill=\"none\" stroke=\"");
        put_escaped(f, col);
        fprintf(f, "\" stroke-width=\"%g\" points=\"", sr->stroke_width > 0 ? sr->stroke_width : 2);
        for (int i = 0; i < sr->n; i++)
            if (usable(&ax, sr->x[i]) && usable(&ay, sr->y[i]))
                fprintf(f, "%.1f,%.1f ", X(sr->x[i]), Y(sr->y[i]));
        fprintf(f, "\"/>\n");
        for (int i = 0; sr->markers && i < sr->n; i++) {
            if (!usable(&ax, sr->x[i]) || !usable(&ay, sr->y[i])) continue;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"", X(sr->x[i]), Y(sr->y[i]));
            put_escaped(f, col);
            fprintf(f, "\"><title>");
            put_escaped(f, sr->name);
            fprintf(f, " ");
            put_escaped(f, p->x_symbol ? p->x_symbol : "x");
            fprintf(f, "=");
            put_number(f, sr->x[i]);
            fprintf(f, ": %.3f</title></circle>\n", sr->y[i]);
        }
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"", W - RIGHT + 8, TOP + 30 + 16.0 * s);
        put_escaped(f, col);
        fprintf(f, "\">");
        put_escaped(f, sr->name);
        fprintf(f, "</text>\n");
    }
    if (p->y_clip > 0)
        fprintf(f,
                "<text x=\"%.0f\" y=\"%.0f\" fill=\"#666\" font-size=\"10\">values above %.1f "
                "clipped</text>\n",
                W - RIGHT + 8, H - BOTTOM, p->y_clip);
    fprintf(f, "</svg>\n");
#undef X
#undef Y
}

msrnn_status plot_svg_write(const char *path, const plot_params *p, const plot_series *series,
                            int n_series) {
    atomic_file *af;
    MSRNN_TRY(atomic_file_open(path, &af));
    plot_svg_print(atomic_file_stream(af), p, series, n_series);
    return atomic_file_commit(af);
}

/* red (0) through yellow (0.5) to green (1) */
static void heat_colour(double v, char *buf, size_t cap) {
    if (!(v >= 0)) v = 0;
    if (v > 1) v = 1;
    const int r = v < 0.5 ? 215 : (int)lround(215 - (v - 0.5) * 2 * (215 - 26));
    const int g = v < 0.5 ? (int)lround(48 + v * 2 * (190 - 48))
                          : (int)lround(190 - (v - 0.5) * 2 * (190 - 150));
    const int b = v < 0.5 ? 39 : (int)lround(39 + (v - 0.5) * 2 * (80 - 39));
    snprintf(buf, cap, "#%02x%02x%02x", r, g, b);
}

void heatmap_svg_print(FILE *f, const heatmap_params *h) {
    const int cw = 72, ch = 36, left = 110, top = 56;
    const int width = left + h->nx * cw + 30, height = top + h->ny * ch + 70;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"13\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            width, height, width, height);
    if (h->title) {
        fprintf(f, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", width / 2);
        put_escaped(f, h->title);
        fprintf(f, "</text>\n");
    }
    for (int y = 0; y < h->ny; y++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 8,
                top + y * ch + ch / 2 + 5);
        put_escaped(f, h->y_names[y]);
        fprintf(f, "</text>\n");
        for (int x = 0; x < h->nx; x++) {
            const double v = h->values[(size_t)y * h->nx + x];
            char col[16], pct[32];
            if (isnan(v))
                snprintf(col, sizeof col, "#d9d9d9"), snprintf(pct, sizeof pct, "n/a");
            else
                heat_colour(v, col, sizeof col), snprintf(pct, sizeof pct, "%.0f%%", 100 * v);
            const char *text = h->cell_texts ? h->cell_texts[(size_t)y * h->nx + x] : pct;
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" "
                    "stroke=\"white\"><title>",
                    left + x * cw, top + y * ch, cw, ch, col);
            put_escaped(f, h->x_names[x]);
            fprintf(f, ", ");
            put_escaped(f, h->y_names[y]);
            fprintf(f, ": ");
            put_escaped(f, text ? text : pct);
            fprintf(f, "</title></rect>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">",
                    left + x * cw + cw / 2, top + y * ch + ch / 2 + 5);
            put_escaped(f, text ? text : pct);
            fprintf(f, "</text>\n");
        }
    }
    for (int x = 0; x < h->nx; x++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", left + x * cw + cw / 2,
                top + h->ny * ch + 20);
        put_escaped(f, h->x_names[x]);
        fprintf(f, "</text>\n");
    }
    if (h->x_label) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", left + h->nx * cw / 2,
                top + h->ny * ch + 48);
        put_escaped(f, h->x_label);
        fprintf(f, "</text>\n");
    }
    if (h->y_label) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">",
                left / 2 - 10, top - 10);
        put_escaped(f, h->y_label);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
}

msrnn_status heatmap_svg_write(const char *path, const heatmap_params *h) {
    atomic_file *af;
    MSRNN_TRY(atomic_file_open(path, &af));
    heatmap_svg_print(atomic_file_stream(af), h);
    return atomic_file_commit(af);
}
