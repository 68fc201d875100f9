/* cmd_info.c — `msrnn info`: what a GGUF file holds. Prints the version, alignment, every metadata
 * key with its type and value (long arrays and strings abbreviated), then a table of tensors and
 * the totals; --json prints the same in full as one JSON object. Reads the file only through the
 * GGUF reader, so anything it prints has been validated; it does not interpret the keys as a model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "io/gguf.h"

#define SHOW_ELEMENTS 8     /* array elements shown before "... (N total)" */
#define SHOW_STRING 96      /* bytes of a string value shown */
#define SHOW_ELEM_STRING 32 /* bytes of a string inside an array shown */

static const cli_option options[] = {
    {NULL, NULL, "FILE", .help = "the GGUF file", .complete = "*.gguf", .layout = CLI_SYNOPSIS},
    {NULL, "--json", NULL, .help = "prints everything (arrays in full) as one JSON object",
     .layout = CLI_INLINE},
};
static const cli_table table = {CLI_OPTIONS(options)};

const cli_command info_command = {
    .name = "info",
    .summary = "print a GGUF file's metadata and tensors",
    .synopsis = "msrnn info [--json] FILE",
    .description = "  prints a GGUF file's version, alignment, metadata and tensors;\n",
    .tables = {&table},
};

static void usage(FILE *f) { cli_help(f, &info_command); }

/* ---- values ---------------------------------------------------------------------------------- */

/* The shortest %g form that reads back as the same float (f32) or double. */
static void print_float(FILE *f, double v, int is_f32) {
    char buf[40];
    for (int prec = is_f32 ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (is_f32 ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

/* A quoted, escaped string; with limit, cut at a UTF-8 character boundary and marked. */
static void print_string(FILE *f, gguf_str s, size_t limit) {
    if (!limit || s.len <= limit) {
        json_string(f, s.ptr, (size_t)s.len);
        return;
    }
    size_t n = limit;
    while (n > 0 && ((unsigned char)s.ptr[n] & 0xc0) == 0x80) n--; /* not inside a character */
    json_string(f, s.ptr, n);
    fprintf(f, "... (%llu bytes)", (unsigned long long)s.len);
}

/* Element i of a numeric or bool array. */
static void print_element(FILE *f, gguf_type t, const void *data, uint64_t i, int json) {
    switch (t) {
    case GGUF_TYPE_UINT8: fprintf(f, "%u", ((const uint8_t *)data)[i]); break;
    case GGUF_TYPE_INT8: fprintf(f, "%d", ((const int8_t *)data)[i]); break;
    case GGUF_TYPE_UINT16: fprintf(f, "%u", ((const uint16_t *)data)[i]); break;
    case GGUF_TYPE_INT16: fprintf(f, "%d", ((const int16_t *)data)[i]); break;
    case GGUF_TYPE_UINT32: fprintf(f, "%u", ((const uint32_t *)data)[i]); break;
    case GGUF_TYPE_INT32: fprintf(f, "%d", ((const int32_t *)data)[i]); break;
    case GGUF_TYPE_UINT64:
        fprintf(f, "%llu", (unsigned long long)((const uint64_t *)data)[i]);
        break;
    case GGUF_TYPE_INT64: fprintf(f, "%lld", (long long)((const int64_t *)data)[i]); break;
    case GGUF_TYPE_BOOL: fputs(((const uint8_t *)data)[i] ? "true" : "false", f); break;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: {
        int is_f32 = t == GGUF_TYPE_FLOAT32;
        double v = is_f32 ? ((const float *)data)[i] : ((const double *)data)[i];
        if (json && !isfinite(v))
            fputs("null", f); /* JSON has no NaN or infinity */
        else
            print_float(f, v, is_f32);
    } break;
    default: break;
    }
}

/* The type of a value as text: "uint32", "string", "[float32 x 8192]", "[[...] x 3]". */
static void format_type(char *buf, size_t cap, const gguf_value *v) {
    if (v->type != GGUF_TYPE_ARRAY)
        snprintf(buf, cap, "%s", gguf_type_name(v->type));
    else
        snprintf(buf, cap, "[%s x %llu]",
                 v->arr.type == GGUF_TYPE_ARRAY ? "[...]" : gguf_type_name(v->arr.type),
                 (unsigned long long)v->arr.n);
}

/* A value; in text mode (json = 0) arrays stop after SHOW_ELEMENTS and strings are cut. */
static void print_value(FILE *f, const gguf_value *v, int json, int nested) {
    switch (v->type) {
    case GGUF_TYPE_STRING:
        print_string(f, v->str, json ? 0 : nested ? SHOW_ELEM_STRING : SHOW_STRING);
        return;
    case GGUF_TYPE_ARRAY: {
        uint64_t n = v->arr.n, shown = json || n <= SHOW_ELEMENTS ? n : SHOW_ELEMENTS;
        fputc('[', f);
        for (uint64_t i = 0; i < shown; i++) {
            if (i) fputs(", ", f);
            if (v->arr.type == GGUF_TYPE_STRING)
                print_string(f, ((const gguf_str *)v->arr.data)[i], json ? 0 : SHOW_ELEM_STRING);
            else if (v->arr.type == GGUF_TYPE_ARRAY)
                print_value(f, &((const gguf_value *)v->arr.data)[i], json, 1);
            else
                print_element(f, v->arr.type, v->arr.data, i, json);
        }
        if (shown < n) fprintf(f, ", ... (%llu total)", (unsigned long long)n);
        fputc(']', f);
        return;
    }
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64: fprintf(f, "%llu", (unsigned long long)v->u64); return;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64: fprintf(f, "%lld", (long long)v->i64); return;
    case GGUF_TYPE_BOOL: fputs(v->b ? "true" : "false", f); return;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64:
        if (json && !isfinite(v->f64))
            fputs("null", f);
        else
            print_float(f, v->f64, v->type == GGUF_TYPE_FLOAT32);
        return;
    default: fputs("?", f); return;
    }
}

/* ---- tensors --------------------------------------------------------------------------------- */

/* "[384, 8192]" */
static void format_shape(char *buf, size_t cap, const gguf_tensor *t) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < t->n_dims && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->ne[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static const char *tensor_type_name(tensor_type t) {
    const type_traits_t *tr = type_traits(t);
    return tr ? tr->name : "?";
}

static void print_text(const gguf_file *g) {
    printf("file:       %s (%zu bytes)\n", g->path, g->size);
    printf("version:    %u\n", g->version);
    printf("alignment:  %llu\n", (unsigned long long)g->alignment);
    printf("data:       at offset %llu\n", (unsigned long long)g->data_offset);

    int key_w = 8;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.len > (uint64_t)key_w)
            key_w = g->kv[i].key.len > 48 ? 48 : (int)g->kv[i].key.len;
    printf("\nmetadata (%llu keys):\n", (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char type[48];
        format_type(type, sizeof type, &kv->value);
        printf("  %-*.*s  %-18s ", key_w, (int)kv->key.len, kv->key.ptr, type);
        print_value(stdout, &kv->value, 0, 0);
        putchar('\n');
    }

    int name_w = 4, shape_w = 5;
    char shape[128];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (t->name.len > (uint64_t)name_w) name_w = t->name.len > 48 ? 48 : (int)t->name.len;
        format_shape(shape, sizeof shape, t);
        if ((int)strlen(shape) > shape_w) shape_w = (int)strlen(shape);
    }
    printf("\ntensors (%llu):\n", (unsigned long long)g->n_tensors);
    if (g->n_tensors)
        printf("  %-*s  %-5s  %-*s  %12s  %12s\n", name_w, "name", "type", shape_w, "shape",
               "offset", "bytes");
    uint64_t params = 0, bytes = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        format_shape(shape, sizeof shape, t);
        printf("  %-*.*s  %-5s  %-*s  %12llu  %12llu\n", name_w, (int)t->name.len, t->name.ptr,
               tensor_type_name(t->type), shape_w, shape, (unsigned long long)t->offset,
               (unsigned long long)t->n_bytes);
        params += t->n_elements;
        bytes += t->n_bytes;
    }
    printf("\ntotal: %llu tensors, %llu parameters, %llu bytes of tensor data\n",
           (unsigned long long)g->n_tensors, (unsigned long long)params, (unsigned long long)bytes);
}

static void print_json(const gguf_file *g) {
    printf("{\"file\": ");
    json_string(stdout, g->path, strlen(g->path));
    printf(", \"size\": %zu, \"version\": %u, \"alignment\": %llu, \"data_offset\": %llu,\n",
           g->size, g->version, (unsigned long long)g->alignment,
           (unsigned long long)g->data_offset);
    printf(" \"metadata\": [");
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        printf("%s\n  {\"key\": ", i ? "," : "");
        json_string(stdout, kv->key.ptr, (size_t)kv->key.len);
        printf(", \"type\": \"%s\"", gguf_type_name(kv->value.type));
        if (kv->value.type == GGUF_TYPE_ARRAY)
            printf(", \"element_type\": \"%s\"", gguf_type_name(kv->value.arr.type));
        printf(", \"value\": ");
        print_value(stdout, &kv->value, 1, 0);
        putchar('}');
    }
    printf("],\n \"tensors\": [");
    uint64_t params = 0, bytes = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char shape[128];
        printf("%s\n  {\"name\": ", i ? "," : "");
        json_string(stdout, t->name.ptr, (size_t)t->name.len);
        format_shape(shape, sizeof shape, t);
        printf(", \"type\": \"%s\", \"shape\": %s, \"offset\": %llu, \"bytes\": %llu}",
               tensor_type_name(t->type), shape, (unsigned long long)t->offset,
               (unsigned long long)t->n_bytes);
        params += t->n_elements;
        bytes += t->n_bytes;
    }
    printf("],\n \"n_tensors\": %llu, \"n_params\": %llu, \"n_bytes\": %llu}\n",
           (unsigned long long)g->n_tensors, (unsigned long long)params, (unsigned long long)bytes);
}

int cmd_info(int argc, char **argv) {
    arg_set_command(&info_command);
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            arg_unknown("info", a);
            return 2;
        } else if (path) {
            fprintf(stderr, "msrnn info: one FILE only ('%s' and '%s')\n", path, a);
            return 2;
        } else {
            path = a;
        }
    }
    if (!path) {
        fprintf(stderr, "msrnn info: needs a FILE\n");
        usage(stderr);
        return 2;
    }
    gguf_file *g;
    if (gguf_open(path, &g) != MSRNN_OK) {
        fprintf(stderr, "msrnn info: %s\n", msrnn_last_error());
        return 1;
    }
    if (json)
        print_json(g);
    else
        print_text(g);
    gguf_close(g);
    return 0;
}
