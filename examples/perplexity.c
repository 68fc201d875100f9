/* perplexity.c — the perplexity of a text under a memory, by the long-document protocol
 * (chunks of the model's context, each from an empty memory; what `msrnn perplexity` runs).
 *
 *   cc perplexity.c $(pkg-config --cflags --libs msrnn) -o perplexity
 *   ./perplexity MODEL.gguf BOOK.txt [MEMORY [KV_SIZE [MAX_CHUNKS]]]
 *
 * Prints one line: ppl=... bits_per_byte=... tokens=... memory_bytes=...
 */
#include <msrnn.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file, or NULL with a message. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            char *grown = realloc(buf, cap = cap ? 2 * cap : 1 << 16);
            if (!grown) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(buf), fclose(f);
                return NULL;
            }
            buf = grown;
        }
        const size_t got = fread(buf + *len, 1, cap - *len, f);
        if (!got) break;
        *len += got;
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf TEXT [MEMORY [KV_SIZE [MAX_CHUNKS]]]\n", argv[0]);
        return 2;
    }
    size_t len;
    char *text = read_file(argv[2], &len);
    if (!text) return 1;
    msrnn_model *model;
    msrnn_status st = msrnn_model_open(argv[1], &model);
    if (st != MSRNN_OK) {
        fprintf(stderr, "perplexity: %s\n", msrnn_last_error());
        free(text);
        return 1;
    }
    msrnn_perplexity_params p = msrnn_perplexity_default_params();
    p.session.memory = argc > 3 ? argv[3] : "full";
    p.session.kv_size = argc > 4 ? atoi(argv[4]) : 0;
    p.max_chunks = argc > 5 ? atoi(argv[5]) : 0;
    const char *texts[1] = {text};
    msrnn_perplexity_result r;
    st = msrnn_perplexity(model, texts, &len, 1, &p, &r);
    if (st == MSRNN_OK)
        printf("ppl=%.17g bits_per_byte=%.17g tokens=%llu memory_bytes=%llu\n", r.ppl,
               r.bits_per_byte, (unsigned long long)r.n_scored, (unsigned long long)r.memory_bytes);
    else
        fprintf(stderr, "perplexity: %s: %s\n", msrnn_status_name(st), msrnn_last_error());
    msrnn_model_close(model);
    free(text);
    return st == MSRNN_OK ? 0 : 1;
}
