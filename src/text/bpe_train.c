/* bpe_train.c — SentencePiece-style BPE training: count words, choose the alphabet, learn merges.
 *
 * The rules (tests/test_tokenizer_train.py reimplements them naively from this list and checks
 * that it learns the same pieces):
 *  1. Text. Each text is one document: "▁" (U+2581) goes before it, every ' ' becomes "▁", and each
 *     malformed UTF-8 byte is U+FFFD: the tokenizer's normalization (tokenizer.c).
 *  2. Characters that never merge: the ASCII control characters ('\n', '\r', '\t', ...) and, with
 *     split_digits, the digits 0-9. Each is a piece of its own, so no piece spans a line break (the
 *     first word of a line has no "▁" unless the line starts with a space: the text says so).
 *  3. Alphabet: the characters by count (descending, then code point), taken while the share of
 *     occurrences already taken is below character_coverage; "▁" always; U+0000 never. A character
 *     outside the alphabet never merges; the tokenizer writes it as its UTF-8 bytes (<0xNN>).
 *  4. A piece is valid if it has at most max_piece_chars characters and "▁" only as its first
 *     character (with whitespace_pieces also: only "▁"s) — SentencePiece's split_by_whitespace.
 *  5. Merges. The symbols start as the characters. Repeatedly take the adjacent pair (left, right)
 *     of mergeable symbols whose concatenation is valid with the most occurrences; ties: fewer
 *     characters, then smaller bytes (unsigned), then the shorter left part. If the concatenation
 *     already is a piece (learned before, or <unk>, <s>, </s>, <0xNN>), the pair is dropped for
 *     good, as SentencePiece does; otherwise it is the next piece and all its occurrences are
 *     replaced, left to right. Stop when the vocabulary is full.
 *
 * Words. No valid piece spans a character that never merges, nor a "▁" that follows another
 * character (with whitespace_pieces: a "▁" that follows a character other than "▁"). So the text
 * is cut there into words, the distinct words are counted (one hash table per thread), and BPE
 * runs over the distinct words with their counts — the same merges as over the whole text.
 *
 * Scores: merge k gets -k, so the tokenizer (highest score first) replays the merges in order.
 *
 * Speed: the pairs live in a hash table, each with its count and the list of positions where it
 * was made (entries go stale and are checked when used), and in a max-heap keyed by the order of
 * rule 5. A merge touches only its own positions and their neighbours: O(occurrences · log pairs).
 *
 * Not done: the unigram model, Unicode script splitting and NFKC normalization (SentencePiece's
 * other defaults; GGUF's "llama" tokenizer carries no normalizer), sentence sampling.
 */
#include "text/bpe_train.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "text/tokenizer.h"

#define N_CODEPOINTS 0x110000
#define CP_SPACE 0x2581 /* "▁" */
#define CP_REPLACEMENT 0xFFFD
#define CHUNK_BYTES (1u << 20)

bpe_train_params bpe_train_default_params(void) {
    return (bpe_train_params){.character_coverage = 0.9995,
                              .split_digits = 1,
                              .whitespace_pieces = 0,
                              .max_piece_chars = 16,
                              .max_chars = 0,
                              .n_threads = 0};
}

/* ---- UTF-8 ------------------------------------------------------------------------------------
 */

/* The code point of the character at s (n bytes left) and its length; a malformed byte is U+FFFD
 * of length 1 (the checks of sentencepiece's IsValidDecodeUTF8, as tokenizer.c). */
static uint32_t utf8_next(const uint8_t *s, size_t n, size_t *len) {
    uint8_t c = s[0];
    *len = 1;
    if (c < 0x80) return c;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && cp >= 0x80) return *len = 2, cp;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            (cp < 0xD800 || cp >= 0xE000))
            return *len = 3, cp;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF)
            return *len = 4, cp;
    }
    return CP_REPLACEMENT;
}

static int utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rule 2: an ASCII character that is always a piece of its own. */
static int never_merges(uint32_t cp, int split_digits) {
    return cp < 0x20 || cp == 0x7F || (split_digits && cp >= '0' && cp <= '9');
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* ---- counting words ---------------------------------------------------------------------------
 * A word is kept as its raw bytes (' ' for "▁"); the leading "▁" of a document is a real ' ' in the
 * key. */

typedef struct {
    uint64_t hash;
    uint64_t off; /* key bytes in the arena */
    uint32_t len;
    int64_t count; /* 0: an empty slot */
} word_slot;

typedef struct {
    word_slot *slots;
    size_t cap, n; /* cap: a power of two */
    char *arena;
    size_t arena_len, arena_cap;
    char *tmp; /* a document's first word, with its leading space */
    size_t tmp_cap;
    int64_t never[128]; /* occurrences of the never-merging ASCII characters */
    uint64_t n_words;
    int failed;
} word_table;

static void table_free(word_table *t) {
    free(t->slots);
    free(t->arena);
    free(t->tmp);
}

static int table_grow(word_table *t) {
    size_t cap = t->cap ? 2 * t->cap : 1 << 14;
    word_slot *s = calloc(cap, sizeof *s);
    if (!s) return t->failed = 1, 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].count) continue;
        size_t j = t->slots[i].hash & (cap - 1);
        while (s[j].count) j = (j + 1) & (cap - 1);
        s[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    return 1;
}

static void table_add(word_table *t, const char *key, size_t len, uint64_t hash, int64_t count) {
    if (t->failed) return;
    if (2 * (t->n + 1) > t->cap && !table_grow(t)) return;
    size_t i = hash & (t->cap - 1);
    for (;; i = (i + 1) & (t->cap - 1)) {
        word_slot *s = &t->slots[i];
        if (!s->count) break;
        if (s->hash == hash && s->len == len && memcmp(t->arena + s->off, key, len) == 0) {
            s->count += count;
            return;
        }
    }
    if (t->arena_len + len > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + len) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return (void)(t->failed = 1);
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, key, len);
    t->slots[i] = (word_slot){hash, t->arena_len, (uint32_t)len, count};
    t->arena_len += len;
    t->n++;
}

/* Count the word s[start, end), after a space when lead is set. */
static void add_word(word_table *t, const char *s, size_t start, size_t end, int lead) {
    size_t len = end - start;
    if (len == 0 && !lead) return;
    const char *key = s + start;
    if (lead) {
        if (len + 1 > t->tmp_cap) {
            size_t cap = 2 * (len + 1) + 64;
            char *b = realloc(t->tmp, cap);
            if (!b) return (void)(t->failed = 1);
            t->tmp = b;
            t->tmp_cap = cap;
        }
        t->tmp[0] = ' ';
        memcpy(t->tmp + 1, s + start, len);
        key = t->tmp;
        len++;
    }
    t->n_words++;
    table_add(t, key, len, hash_bytes(key, len), 1);
}

/* Cut s[0, n) into words. lead: s starts a document (its "▁" goes first). Every cut is at an ASCII
 * byte, so a multi-byte character (or a malformed sequence) never straddles one. */
static void scan_words(word_table *t, const char *s, size_t n, int lead,
                       const bpe_train_params *p) {
    size_t start = 0;
    int has_other = 0; /* the current word has a character other than ' ' */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == ' ') {
            if (!p->whitespace_pieces || has_other) {
                add_word(t, s, start, i, lead);
                start = i, lead = 0, has_other = 0;
            }
        } else if (c < 128 && never_merges(c, p->split_digits)) {
            add_word(t, s, start, i, lead);
            t->never[c]++;
            start = i + 1, lead = 0, has_other = 0;
        } else {
            has_other = 1;
        }
    }
    add_word(t, s, start, n, lead);
}

typedef struct {
    const char *s;
    size_t n;
    int lead;
} chunk;

/* ---- the counts -------------------------------------------------------------------------------
 */

struct bpe_counts {
    bpe_train_params p;
    bpe_stats stats;
    char *arena;      /* the distinct words' bytes */
    word_slot *words; /* n_words, sorted by their bytes */
    size_t n_words;
    uint32_t *alphabet; /* n_alphabet code points, most frequent first */
    int n_alphabet;
};

void bpe_counts_free(bpe_counts *c) {
    if (!c) return;
    free(c->arena);
    free(c->words);
    free(c->alphabet);
    free(c);
}

const bpe_stats *bpe_counts_stats(const bpe_counts *c) { return &c->stats; }
int bpe_min_vocab(const bpe_counts *c) { return BPE_N_RESERVED + c->n_alphabet; }

/* For the qsort comparators (qsort has no context argument). */
static _Thread_local const char *sort_arena;
static _Thread_local const int64_t *sort_char_count;

static int cmp_word(const void *a, const void *b) {
    const word_slot *x = a, *y = b;
    int c = memcmp(sort_arena + x->off, sort_arena + y->off, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int cmp_char(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (sort_char_count[x] != sort_char_count[y])
        return sort_char_count[x] > sort_char_count[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* The texts cut to max_chars characters in all, then into chunks of about CHUNK_BYTES that end
 * after a '\n' (a word boundary in every mode). */
static msrnn_status make_chunks(const bpe_train_params *p, const bpe_text *texts, size_t n_texts,
                                chunk **out, size_t *n_out, bpe_stats *st) {
    size_t n = 0, cap = 0;
    chunk *ch = NULL;
    uint64_t chars_left = p->max_chars ? p->max_chars : UINT64_MAX;
    for (size_t k = 0; k < n_texts && chars_left > 0; k++) {
        const char *s = texts[k].text;
        size_t len = texts[k].len;
        if (len == 0) continue;
        if (!s || len > UINT32_MAX) { /* a word's length is a uint32 */
            free(ch);
            return status_fail(MSRNN_ERR_INVALID,
                               "tokenizer training: text %zu is %s (at most 4 GiB each)", k,
                               s ? "too long" : "NULL");
        }
        if (p->max_chars) { /* cut at the first character past the budget */
            size_t i = 0, cl;
            while (i < len && chars_left > 0) {
                utf8_next((const uint8_t *)s + i, len - i, &cl);
                i += cl;
                chars_left--;
            }
            len = i;
        }
        st->n_texts++;
        st->n_bytes += len;
        for (size_t start = 0; start < len;) {
            size_t end = start + CHUNK_BYTES < len ? start + CHUNK_BYTES : len;
            const char *nl = end < len ? memchr(s + end, '\n', len - end) : NULL;
            end = nl ? (size_t)(nl - s) + 1 : len;
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                chunk *c2 = realloc(ch, nc * sizeof *c2);
                if (!c2) {
                    free(ch);
                    return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
                }
                ch = c2, cap = nc;
            }
            ch[n++] = (chunk){s + start, end - start, start == 0};
            start = end;
        }
    }
    *out = ch;
    *n_out = n;
    return MSRNN_OK;
}

/* Merge every table into tables[0]. */
static void merge_tables(word_table *tables, int n) {
    word_table *t0 = &tables[0];
    for (int k = 1; k < n && !t0->failed; k++) {
        word_table *t = &tables[k];
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].count)
                table_add(t0, t->arena + t->slots[i].off, t->slots[i].len, t->slots[i].hash,
                          t->slots[i].count);
        for (int c = 0; c < 128; c++) t0->never[c] += t->never[c];
        t0->n_words += t->n_words;
        t0->failed |= t->failed;
    }
}

/* Rule 3: the alphabet from the character counts of the distinct words and the never-merging
 * characters. */
static msrnn_status choose_alphabet(bpe_counts *c, const int64_t never[128]) {
    int64_t *count = calloc(N_CODEPOINTS, sizeof *count);
    if (!count) return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    for (int k = 0; k < 128; k++) count[k] += never[k];
    for (size_t w = 0; w < c->n_words; w++) {
        const uint8_t *s = (const uint8_t *)c->arena + c->words[w].off;
        size_t len = c->words[w].len, cl;
        for (size_t i = 0; i < len; i += cl) {
            uint32_t cp = s[i] == ' ' ? (cl = 1, CP_SPACE) : utf8_next(s + i, len - i, &cl);
            count[cp] += c->words[w].count;
        }
    }
    int n_distinct = 0;
    int64_t total = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++)
        if (count[cp]) n_distinct++, total += count[cp];
    uint32_t *chars = malloc(((size_t)n_distinct + 1) * sizeof *chars);
    if (!chars) {
        free(count);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    }
    int n = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++)
        if (count[cp]) chars[n++] = cp;
    sort_char_count = count;
    qsort(chars, (size_t)n, sizeof *chars, cmp_char);
    int64_t taken = 0;
    int k = 0, has_space = 0;
    for (int i = 0; i < n; i++) {
        if (chars[i] == 0) continue; /* U+0000 never: a NUL inside a piece confuses C strings */
        if ((double)taken / (double)total >= c->p.character_coverage) break;
        taken += count[chars[i]];
        has_space |= chars[i] == CP_SPACE;
        chars[k++] = chars[i];
    }
    if (!has_space) { /* "▁" always (it is in every text: the leading one) */
        chars[k++] = CP_SPACE;
        taken += count[CP_SPACE];
    }
    c->alphabet = chars;
    c->n_alphabet = k;
    c->stats.n_chars = (uint64_t)total;
    c->stats.n_distinct_chars = n_distinct;
    c->stats.n_alphabet = k;
    c->stats.coverage = (double)taken / (double)total;
    free(count);
    return MSRNN_OK;
}

msrnn_status bpe_count_words(const bpe_train_params *p, const bpe_text *texts, size_t n_texts,
                             bpe_counts **out) {
    *out = NULL;
    if (!p || !(p->character_coverage > 0 && p->character_coverage <= 1) ||
        p->max_piece_chars < 2 || p->max_piece_chars > 256 || (n_texts && !texts))
        return status_fail(MSRNN_ERR_INVALID,
                           "tokenizer training: character coverage must be in (0, 1] and the "
                           "longest piece 2..256 characters");
    bpe_counts *c = calloc(1, sizeof *c);
    if (!c) return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    c->p = *p;
    chunk *chunks = NULL;
    size_t n_chunks = 0;
    msrnn_status st = make_chunks(p, texts, n_texts, &chunks, &n_chunks, &c->stats);
    if (st != MSRNN_OK) {
        bpe_counts_free(c);
        return st;
    }
    if (n_chunks == 0) {
        bpe_counts_free(c);
        return status_fail(MSRNN_ERR_INVALID, "tokenizer training: no text (%zu empty inputs)",
                           n_texts);
    }

    int nt = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
    if ((size_t)nt > n_chunks) nt = (int)n_chunks;
    word_table *tables = calloc((size_t)nt, sizeof *tables);
    if (!tables) {
        free(chunks);
        bpe_counts_free(c);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (size_t k = 0; k < n_chunks; k++)
        scan_words(&tables[omp_get_thread_num()], chunks[k].s, chunks[k].n, chunks[k].lead, p);
    free(chunks);
    merge_tables(tables, nt);
    for (int k = 1; k < nt; k++) table_free(&tables[k]);
    word_table *t = &tables[0];

    /* The distinct words, sorted by their bytes: the order everything after depends on. */
    int64_t never[128];
    memcpy(never, t->never, sizeof never);
    int failed = t->failed;
    if (!failed) {
        size_t n = 0;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].count) t->slots[n++] = t->slots[i];
        sort_arena = t->arena;
        if (n > 1) qsort(t->slots, n, sizeof *t->slots, cmp_word);
        c->words = t->slots, c->n_words = n, c->arena = t->arena;
        t->slots = NULL, t->arena = NULL;
        c->stats.n_words = t->n_words;
        c->stats.n_unique_words = n;
    }
    table_free(t);
    free(tables);
    if (failed) {
        bpe_counts_free(c);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory counting words");
    }

    st = choose_alphabet(c, never);
    if (st != MSRNN_OK) {
        bpe_counts_free(c);
        return st;
    }
    *out = c;
    return MSRNN_OK;
}

/* ---- learning merges --------------------------------------------------------------------------
 */

enum { KIND_PLAIN, KIND_WS_FIRST, KIND_WS_ONLY }; /* no "▁" / "▁" first / only "▁"s */

typedef struct {
    uint32_t off, len; /* bytes in the blob */
    uint16_t n_chars;
    uint8_t kind;
} symbol;

typedef struct {
    int32_t left, right;
    int64_t count;
    int32_t heap_at; /* index in the heap, -1: not in it */
    int32_t dead;    /* merged or dropped: never again */
    uint32_t n_pos, cap_pos;
    uint32_t *pos; /* where the pair was made (its left symbol); may be stale */
} pair_rec;

typedef struct {
    const bpe_train_params *p;
    /* symbols: the alphabet, then one per merge */
    symbol *syms;
    int32_t n_syms, cap_syms;
    char *blob;
    size_t blob_len, blob_cap;
    /* the distinct words as one array: runs of symbols between barriers (-1); -2: merged away */
    int32_t *sym, *next, *prev, *word;
    size_t n, cap;
    const word_slot *words; /* the distinct words (their counts) */
    /* pairs */
    pair_rec *pairs;
    int32_t n_pairs, cap_pairs;
    int32_t *merged_from; /* per merge: the pair it joined */
    uint64_t *map_keys;   /* (left << 32 | right) + 1; 0: empty */
    int32_t *map_vals;
    size_t map_cap;
    int32_t *heap;
    int32_t n_heap;
    int heap_ready;
    /* the merged pieces' strings, for rule 5's duplicate check */
    int32_t *set; /* symbol ids, -1: empty */
    size_t set_cap;
    int failed;
} merger;

static const char *sym_bytes(const merger *m, int32_t s) { return m->blob + m->syms[s].off; }

static int blob_reserve(merger *m, size_t extra) {
    if (m->blob_len + extra <= m->blob_cap) return 1;
    size_t cap = m->blob_cap ? m->blob_cap : 1 << 12;
    while (cap < m->blob_len + extra) cap *= 2;
    char *b = realloc(m->blob, cap);
    if (!b) return m->failed = 1, 0;
    m->blob = b;
    m->blob_cap = cap;
    return 1;
}

/* Add a symbol whose bytes are already at the end of the blob. */
static int32_t add_symbol(merger *m, uint32_t len, int n_chars, int kind) {
    if (m->n_syms == m->cap_syms) {
        int32_t cap = m->cap_syms ? 2 * m->cap_syms : 256;
        symbol *s = realloc(m->syms, (size_t)cap * sizeof *s);
        if (!s) return m->failed = 1, -1;
        m->syms = s;
        m->cap_syms = cap;
    }
    m->syms[m->n_syms] = (symbol){(uint32_t)m->blob_len, len, (uint16_t)n_chars, (uint8_t)kind};
    m->blob_len += len;
    return m->n_syms++;
}

/* Rule 4 for the concatenation of two valid pieces. */
static int pair_valid(const merger *m, int32_t l, int32_t r) {
    const symbol *a = &m->syms[l], *b = &m->syms[r];
    if (a->n_chars + b->n_chars > m->p->max_piece_chars) return 0;
    if (b->kind != KIND_PLAIN) /* right starts with "▁": only "▁"s may precede it */
        return m->p->whitespace_pieces && a->kind == KIND_WS_ONLY && b->kind == KIND_WS_ONLY;
    return !(a->kind == KIND_WS_ONLY && a->n_chars > 1); /* "▁▁" + "x": "▁" not first */
}

/* -- the piece set (merged pieces only: a concatenation has two or more characters) -- */

static int32_t set_find(const merger *m, const char *s, size_t n) {
    for (size_t i = hash_bytes(s, n) & (m->set_cap - 1);; i = (i + 1) & (m->set_cap - 1)) {
        int32_t id = m->set[i];
        if (id < 0) return -1;
        if (m->syms[id].len == n && memcmp(sym_bytes(m, id), s, n) == 0) return id;
    }
}

static void set_insert(merger *m, int32_t id) {
    size_t i = hash_bytes(sym_bytes(m, id), m->syms[id].len) & (m->set_cap - 1);
    while (m->set[i] >= 0) i = (i + 1) & (m->set_cap - 1);
    m->set[i] = id;
}

/* <unk>, <s>, </s> or <0xNN> (as the vocabulary spells them: upper-case hex). */
static int is_reserved(const char *s, size_t n) {
    if ((n == 5 && !memcmp(s, "<unk>", 5)) || (n == 3 && !memcmp(s, "<s>", 3)) ||
        (n == 4 && !memcmp(s, "</s>", 4)))
        return 1;
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return 0;
    for (int k = 3; k < 5; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'A' && s[k] <= 'F'))) return 0;
    return 1;
}

/* -- the heap: rule 5's order -- */

static int concat_cmp(const merger *m, const pair_rec *x, const pair_rec *y) {
    const symbol *xl = &m->syms[x->left], *xr = &m->syms[x->right];
    const symbol *yl = &m->syms[y->left], *yr = &m->syms[y->right];
    size_t nx = (size_t)xl->len + xr->len, ny = (size_t)yl->len + yr->len;
    size_t n = nx < ny ? nx : ny;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = (uint8_t)(i < xl->len ? m->blob[xl->off + i] : m->blob[xr->off + i - xl->len]);
        uint8_t b = (uint8_t)(i < yl->len ? m->blob[yl->off + i] : m->blob[yr->off + i - yl->len]);
        if (a != b) return a < b ? -1 : 1;
    }
    return (nx > ny) - (nx < ny);
}

static int pair_before(const merger *m, int32_t a, int32_t b) {
    const pair_rec *x = &m->pairs[a], *y = &m->pairs[b];
    if (x->count != y->count) return x->count > y->count;
    int cx = m->syms[x->left].n_chars + m->syms[x->right].n_chars;
    int cy = m->syms[y->left].n_chars + m->syms[y->right].n_chars;
    if (cx != cy) return cx < cy;
    int c = concat_cmp(m, x, y);
    if (c) return c < 0;
    return m->syms[x->left].len < m->syms[y->left].len;
}

static void heap_set(merger *m, int32_t i, int32_t p) {
    m->heap[i] = p;
    m->pairs[p].heap_at = i;
}

static void sift_up(merger *m, int32_t i) {
    int32_t p = m->heap[i];
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!pair_before(m, p, m->heap[parent])) break;
        heap_set(m, i, m->heap[parent]);
        i = parent;
    }
    heap_set(m, i, p);
}

static void sift_down(merger *m, int32_t i) {
    int32_t p = m->heap[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= m->n_heap) break;
        if (c + 1 < m->n_heap && pair_before(m, m->heap[c + 1], m->heap[c])) c++;
        if (!pair_before(m, m->heap[c], p)) break;
        heap_set(m, i, m->heap[c]);
        i = c;
    }
    heap_set(m, i, p);
}

static void heap_remove(merger *m, int32_t p) {
    int32_t i = m->pairs[p].heap_at;
    if (i < 0) return;
    m->pairs[p].heap_at = -1;
    int32_t last = m->heap[--m->n_heap];
    if (i == m->n_heap) return;
    heap_set(m, i, last);
    sift_up(m, i);
    sift_down(m, m->pairs[last].heap_at);
}

/* Put pair p where its count says (in the heap while its count is positive). */
static void heap_update(merger *m, int32_t p) {
    if (!m->heap_ready) return;
    pair_rec *r = &m->pairs[p];
    if (r->count <= 0 || r->dead) {
        heap_remove(m, p);
    } else if (r->heap_at < 0) {
        r->heap_at = m->n_heap;
        m->heap[m->n_heap++] = p; /* the heap has room for every pair */
        sift_up(m, r->heap_at);
    } else {
        sift_up(m, r->heap_at);
        sift_down(m, r->heap_at);
    }
}

/* -- pairs -- */

static int map_grow(merger *m) {
    size_t cap = m->map_cap ? 2 * m->map_cap : 1 << 16;
    uint64_t *keys = calloc(cap, sizeof *keys);
    int32_t *vals = malloc(cap * sizeof *vals);
    if (!keys || !vals) {
        free(keys), free(vals);
        return m->failed = 1, 0;
    }
    for (size_t i = 0; i < m->map_cap; i++) {
        if (!m->map_keys[i]) continue;
        size_t j = (m->map_keys[i] * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = m->map_keys[i];
        vals[j] = m->map_vals[i];
    }
    free(m->map_keys), free(m->map_vals);
    m->map_keys = keys, m->map_vals = vals, m->map_cap = cap;
    return 1;
}

/* The pair (l, r), created when create is set; -1 if absent (or out of memory). */
static int32_t pair_get(merger *m, int32_t l, int32_t r, int create) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    if (!create && !m->map_cap) return -1;
    if (create && 2 * ((size_t)m->n_pairs + 1) > m->map_cap && !map_grow(m)) return -1;
    size_t i = (key * 0x9e3779b97f4a7c15ull >> 20) & (m->map_cap - 1);
    for (; m->map_keys[i]; i = (i + 1) & (m->map_cap - 1))
        if (m->map_keys[i] == key) return m->map_vals[i];
    if (!create) return -1;
    if (m->n_pairs == m->cap_pairs) {
        int32_t cap = m->cap_pairs ? 2 * m->cap_pairs : 1 << 12;
        pair_rec *pr = realloc(m->pairs, (size_t)cap * sizeof *pr);
        int32_t *h = realloc(m->heap, (size_t)cap * sizeof *h);
        if (pr) m->pairs = pr;
        if (h) m->heap = h;
        if (!pr || !h) return m->failed = 1, -1;
        m->cap_pairs = cap;
    }
    int32_t id = m->n_pairs++;
    m->pairs[id] = (pair_rec){l, r, 0, -1, 0, 0, 0, NULL};
    m->map_keys[i] = key;
    m->map_vals[i] = id;
    return id;
}

/* Add delta occurrences of the pair (l, r), made at position at when delta > 0. */
static void pair_change(merger *m, int32_t l, int32_t r, int64_t delta, size_t at) {
    if (!pair_valid(m, l, r)) return;
    int32_t id = pair_get(m, l, r, delta > 0);
    if (id < 0) return;
    pair_rec *p = &m->pairs[id];
    if (p->dead) return;
    p->count += delta;
    if (delta > 0) {
        if (p->n_pos == p->cap_pos) {
            uint32_t cap = p->cap_pos ? 2 * p->cap_pos : 4;
            uint32_t *pos = realloc(p->pos, cap * sizeof *pos);
            if (!pos) return (void)(m->failed = 1);
            p->pos = pos;
            p->cap_pos = cap;
        }
        p->pos[p->n_pos++] = (uint32_t)at;
    }
    heap_update(m, id);
}

/* -- the corpus array -- */

static int corpus_push(merger *m, int32_t s, int32_t w) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1 << 16;
        if (cap > INT32_MAX) return m->failed = 1, 0; /* positions are int32 */
        int32_t *a = realloc(m->sym, cap * sizeof *a);
        if (a) m->sym = a;
        int32_t *b = realloc(m->word, cap * sizeof *b);
        if (b) m->word = b;
        if (!a || !b) return m->failed = 1, 0;
        m->cap = cap;
    }
    m->sym[m->n] = s;
    m->word[m->n] = w;
    m->n++;
    return 1;
}

/* The distinct words as runs of alphabet symbols (two or more: a lone symbol makes no pair),
 * each run followed by a barrier. */
static int build_corpus(merger *m, const bpe_counts *c, const int32_t *sym_of) {
    if (!corpus_push(m, -1, 0)) return 0;
    for (size_t w = 0; w < c->n_words; w++) {
        const uint8_t *s = (const uint8_t *)c->arena + c->words[w].off;
        size_t len = c->words[w].len, cl, run = 0;
        for (size_t i = 0; i <= len; i += cl) {
            int32_t id = -1;
            cl = 1;
            if (i < len) id = sym_of[s[i] == ' ' ? CP_SPACE : utf8_next(s + i, len - i, &cl)];
            if (id >= 0) {
                if (!corpus_push(m, id, (int32_t)w)) return 0;
                run++;
            } else if (run == 1) { /* undo a lone symbol */
                m->n--;
                run = 0;
            } else if (run > 1) {
                if (!corpus_push(m, -1, 0)) return 0;
                run = 0;
            }
        }
    }
    m->next = malloc(m->n * sizeof *m->next);
    m->prev = malloc(m->n * sizeof *m->prev);
    if (!m->next || !m->prev) return m->failed = 1, 0;
    for (size_t i = 0; i < m->n; i++) {
        m->next[i] =
            i + 1 < m->n ? (int32_t)(i + 1) : 0; /* the last is a barrier: never followed */
        m->prev[i] = i ? (int32_t)(i - 1) : 0;
    }
    return 1;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Replace every occurrence of pair id by the new symbol x, left to right, updating the counts of
 * the neighbouring pairs. */
static void apply_merge(merger *m, int32_t id, int32_t x) {
    pair_rec *best = &m->pairs[id];
    int32_t L = best->left, R = best->right;
    uint32_t *pos = best->pos, n_pos = best->n_pos;
    best->pos = NULL, best->n_pos = best->cap_pos = 0;
    if (n_pos > 1) qsort(pos, n_pos, sizeof *pos, cmp_u32);
    int32_t *sym = m->sym, *next = m->next, *prev = m->prev;
    for (uint32_t k = 0; k < n_pos; k++) {
        uint32_t i = pos[k];
        if (k && pos[k - 1] == i) continue;
        int32_t j = next[i];
        if (sym[i] != L || sym[j] != R) continue; /* stale */
        int64_t w = m->words[m->word[i]].count;
        int32_t a = prev[i], b = next[j];
        if (sym[a] >= 0) {
            pair_change(m, sym[a], L, -w, 0);
            pair_change(m, sym[a], x, w, (size_t)a);
        }
        if (sym[b] >= 0) {
            pair_change(m, R, sym[b], -w, 0);
            pair_change(m, x, sym[b], w, i);
        }
        pair_change(m, L, R, -w, 0);
        sym[i] = x;
        sym[j] = -2;
        next[i] = b;
        prev[b] = (int32_t)i;
    }
    free(pos);
    best = &m->pairs[id];
    best->dead = 1;
    heap_remove(m, id);
}

static void merger_free(merger *m) {
    free(m->syms);
    free(m->blob);
    free(m->sym), free(m->next), free(m->prev), free(m->word);
    for (int32_t i = 0; i < m->n_pairs; i++) free(m->pairs[i].pos);
    free(m->pairs);
    free(m->map_keys), free(m->map_vals);
    free(m->heap);
    free(m->set);
    free(m->merged_from);
}

static msrnn_status vocab_alloc(bpe_vocab *v, int n) {
    v->n_vocab = n;
    v->pieces = calloc((size_t)n, sizeof *v->pieces);
    v->lens = calloc((size_t)n, sizeof *v->lens);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    v->types = calloc((size_t)n, sizeof *v->types);
    if (!v->pieces || !v->lens || !v->scores || !v->types)
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    return MSRNN_OK;
}

static msrnn_status vocab_set(bpe_vocab *v, int i, const char *s, size_t n, float score, int type) {
    if (!(v->pieces[i] = malloc(n + 1)))
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    memcpy(v->pieces[i], s, n);
    v->pieces[i][n] = 0;
    v->lens[i] = n;
    v->scores[i] = score;
    v->types[i] = type;
    return MSRNN_OK;
}

/* The vocabulary id of a symbol. */
static int32_t vocab_id(int32_t sym, int n_alphabet, int n_merges) {
    return sym < n_alphabet ? BPE_N_RESERVED + n_merges + sym : BPE_N_RESERVED + (sym - n_alphabet);
}

/* The layout of bpe_train.h: specials, bytes, merges (score -rank), characters. */
static msrnn_status build_vocab(const merger *m, int n_alphabet, int n_merges, bpe_vocab *v) {
    MSRNN_TRY(vocab_alloc(v, BPE_N_RESERVED + n_merges + n_alphabet));
    v->merge_left = malloc(((size_t)n_merges + 1) * sizeof *v->merge_left);
    v->merge_right = malloc(((size_t)n_merges + 1) * sizeof *v->merge_right);
    if (!v->merge_left || !v->merge_right)
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    v->n_merges = n_merges;
    v->n_alphabet = n_alphabet;
    MSRNN_TRY(vocab_set(v, 0, "<unk>", 5, 0, TOKEN_TYPE_UNKNOWN));
    MSRNN_TRY(vocab_set(v, 1, "<s>", 3, 0, TOKEN_TYPE_CONTROL));
    MSRNN_TRY(vocab_set(v, 2, "</s>", 4, 0, TOKEN_TYPE_CONTROL));
    for (int b = 0; b < 256; b++) {
        static const char hex[] = "0123456789ABCDEF";
        char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        MSRNN_TRY(vocab_set(v, 3 + b, name, 6, 0, TOKEN_TYPE_BYTE));
    }
    int i = BPE_N_RESERVED;
    for (int k = 0; k < n_merges; k++, i++) {
        int32_t s = n_alphabet + k;
        MSRNN_TRY(vocab_set(v, i, sym_bytes(m, s), m->syms[s].len, (float)-k, TOKEN_TYPE_NORMAL));
        const pair_rec *p = &m->pairs[m->merged_from[k]];
        v->merge_left[k] = vocab_id(p->left, n_alphabet, n_merges);
        v->merge_right[k] = vocab_id(p->right, n_alphabet, n_merges);
    }
    for (int k = 0; k < n_alphabet; k++, i++)
        MSRNN_TRY(vocab_set(v, i, sym_bytes(m, k), m->syms[k].len, (float)-(n_merges + k),
                            TOKEN_TYPE_NORMAL));
    return MSRNN_OK;
}

msrnn_status bpe_learn(const bpe_counts *c, int vocab_size, bpe_vocab *out) {
    memset(out, 0, sizeof *out);
    out->max_merges = -1;
    if (vocab_size < bpe_min_vocab(c) || vocab_size > (1 << 24))
        return status_fail(
            MSRNN_ERR_INVALID,
            "tokenizer training: a vocabulary of %d pieces is %s: the %d special and "
            "byte pieces and the %d characters of the alphabet need %d",
            vocab_size, vocab_size > (1 << 24) ? "too large (at most 16777216)" : "too small",
            BPE_N_RESERVED, c->n_alphabet, bpe_min_vocab(c));
    const int target = vocab_size - bpe_min_vocab(c);
    merger m = {.p = &c->p, .words = c->words};
    int32_t *sym_of = malloc(N_CODEPOINTS * sizeof *sym_of);
    m.merged_from = malloc(((size_t)target + 1) * sizeof *m.merged_from);
    m.set_cap = 16;
    while (m.set_cap < 2 * (size_t)target + 2) m.set_cap *= 2;
    m.set = malloc(m.set_cap * sizeof *m.set);
    if (!sym_of || !m.set || !m.merged_from) {
        free(sym_of), free(m.set), free(m.merged_from);
        return status_fail(MSRNN_ERR_NOMEM, "tokenizer training: out of memory");
    }
    for (size_t i = 0; i < m.set_cap; i++) m.set[i] = -1;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++) sym_of[cp] = -1;

    /* The alphabet's symbols; the mergeable ones are what the corpus array holds. */
    for (int k = 0; k < c->n_alphabet && !m.failed; k++) {
        uint32_t cp = c->alphabet[k];
        if (!blob_reserve(&m, 4)) break;
        int len = utf8_put(cp, m.blob + m.blob_len);
        add_symbol(&m, (uint32_t)len, 1, cp == CP_SPACE ? KIND_WS_ONLY : KIND_PLAIN);
        if (!never_merges(cp, c->p.split_digits)) sym_of[cp] = k;
    }
    if (!m.failed) build_corpus(&m, c, sym_of);
    free(sym_of);

    /* Count the pairs, then order them. */
    for (size_t i = 1; i < m.n && !m.failed; i++)
        if (m.sym[i - 1] >= 0 && m.sym[i] >= 0)
            pair_change(&m, m.sym[i - 1], m.sym[i], m.words[m.word[i]].count, i - 1);
    if (!m.failed) {
        for (int32_t p = 0; p < m.n_pairs; p++) {
            m.pairs[p].heap_at = m.n_heap;
            m.heap[m.n_heap++] = p;
        }
        for (int32_t i = m.n_heap / 2 - 1; i >= 0; i--) sift_down(&m, i);
        m.heap_ready = 1;
    }

    int n_merges = 0;
    while (n_merges < target && !m.failed && m.n_heap > 0) {
        int32_t best = m.heap[0];
        pair_rec *b = &m.pairs[best];
        if (b->count <= 0) break;
        const symbol l = m.syms[b->left], r = m.syms[b->right];
        if (!blob_reserve(&m, (size_t)l.len + r.len)) break;
        char *s = m.blob + m.blob_len;
        memcpy(s, m.blob + l.off, l.len);
        memcpy(s + l.len, m.blob + r.off, r.len);
        if (set_find(&m, s, (size_t)l.len + r.len) >= 0 || is_reserved(s, (size_t)l.len + r.len)) {
            b->dead = 1; /* rule 5: the piece exists already */
            heap_remove(&m, best);
            continue;
        }
        int kind = l.kind == KIND_WS_ONLY && r.kind == KIND_WS_ONLY ? KIND_WS_ONLY
                   : l.kind != KIND_PLAIN                           ? KIND_WS_FIRST
                                                                    : KIND_PLAIN;
        int32_t x = add_symbol(&m, l.len + r.len, l.n_chars + r.n_chars, kind);
        if (x < 0) break;
        set_insert(&m, x);
        apply_merge(&m, best, x);
        m.merged_from[n_merges++] = best;
    }
    msrnn_status st = MSRNN_OK;
    if (m.failed)
        st = status_fail(MSRNN_ERR_NOMEM,
                         "tokenizer training: out of memory learning merges "
                         "(%zu symbols in the distinct words)",
                         m.n);
    else if (n_merges < target) {
        out->max_merges = n_merges;
        st = status_fail(MSRNN_ERR_INVALID,
                         "tokenizer training: a vocabulary of %d pieces is too large for this "
                         "text: it has only %d merges, for at most %d pieces",
                         vocab_size, n_merges, bpe_min_vocab(c) + n_merges);
    } else {
        st = build_vocab(&m, c->n_alphabet, n_merges, out);
        if (st != MSRNN_OK) bpe_vocab_free(out);
    }
    merger_free(&m);
    return st;
}

void bpe_vocab_free(bpe_vocab *v) {
    if (!v) return;
    if (v->pieces)
        for (int i = 0; i < v->n_vocab; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->lens);
    free(v->scores);
    free(v->types);
    free(v->merge_left);
    free(v->merge_right);
    int mm = v->max_merges;
    memset(v, 0, sizeof *v);
    v->max_merges = mm;
}

/* ---- writing ----------------------------------------------------------------------------------
 */

msrnn_status bpe_vocab_write_gguf(const bpe_vocab *v, const char *name, const char *path) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    msrnn_status st = gguf_writer_set_str(w, "general.name", name ? name : "msrnn-bpe");
    if (st == MSRNN_OK) st = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (st == MSRNN_OK)
        st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces,
                                     v->lens, (uint64_t)v->n_vocab);
    if (st == MSRNN_OK)
        st = gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores,
                                 (uint64_t)v->n_vocab);
    if (st == MSRNN_OK)
        st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types,
                                 (uint64_t)v->n_vocab);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (st == MSRNN_OK) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    if (st == MSRNN_OK) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    if (st == MSRNN_OK) st = gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    if (st == MSRNN_OK) st = gguf_writer_write(w, path);
    gguf_writer_free(w);
    return st;
}
