/* plot_svg.h — line charts as standalone SVG files: the training loss against the step (`msrnn
 * train`), perplexity against the cache size (`msrnn perplexity --sweep`).
 *
 * One fixed layout (720 × 460 px: the plot on the left, legend and labels in a column on the
 * right), linear or logarithmic axes, any number of series (a polyline each, optionally a dot per
 * point with a tooltip), an optional dashed reference line, and an optional clip above which
 * values are drawn at the edge. Written through base/atomic_file.h. Not a plotting library: no
 * styling beyond colour and width, no automatic "nice" tick values (ticks are given or evenly
 * spaced), no bars or scatter.
 */
#ifndef MSRNN_EVAL_PLOT_SVG_H
#define MSRNN_EVAL_PLOT_SVG_H

#include <stdio.h>

#include "base/status.h"

typedef struct {
    const char *name; /* the legend entry */
    /* n points, drawn in order; a point whose x or y is not finite is left out */
    const double *x, *y;
    int n;
    const char *color;   /* an SVG colour; NULL: the next of a six-colour palette */
    double stroke_width; /* 0: 2 */
    int markers;         /* 1: a dot at each point, whose tooltip reads "NAME x=X: Y" */
} plot_series;

typedef struct {
    const char *title, *x_label, *y_label; /* any may be NULL */
    int x_log, y_log;                      /* logarithmic axes (their values must be > 0) */
    double x_min, x_max;                   /* the x range shown; x_min >= x_max: the data's */
    const double *x_ticks;                 /* tick values, each labelled; NULL: 6 evenly spaced */
    int n_x_ticks;
    const char *x_symbol;  /* the name of x in tooltips (NULL: "x") */
    double y_clip;         /* > 0: a y above it is drawn at it, and a note says so */
    const char *ref_label; /* non-NULL: a dashed line across the plot at y = ref_y, labelled */
    double ref_y;
} plot_params;

/* Draw the series into an SVG document on f. */
void plot_svg_print(FILE *f, const plot_params *p, const plot_series *series, int n_series);
/* The same into a file, atomically. MSRNN_ERR_IO naming the path if it cannot be written. */
msrnn_status plot_svg_write(const char *path, const plot_params *p, const plot_series *series,
                            int n_series);

/* A heat map: ny rows × nx columns of cells, each coloured by its value in [0, 1] (red 0 through
 * yellow to green 1; a NaN value is a grey "n/a" cell) and labelled with its text (NULL: the
 * value as a percentage). Column labels under the grid, row labels on its left. */
typedef struct {
    const char *title, *x_label, *y_label; /* any may be NULL */
    const char *const *x_names;            /* nx column labels */
    const char *const *y_names;            /* ny row labels, top to bottom */
    int nx, ny;
    const double *values;          /* ny × nx, row-major */
    const char *const *cell_texts; /* ny × nx, or NULL */
} heatmap_params;

void heatmap_svg_print(FILE *f, const heatmap_params *h);
/* The same into a file, atomically. MSRNN_ERR_IO naming the path if it cannot be written. */
msrnn_status heatmap_svg_write(const char *path, const heatmap_params *h);

#endif
