/* manifest.h — the files of one split of a corpus manifest.
 *
 * A manifest is a tab-separated file whose header row names (at least) the columns `file` and
 * `split`; every other column is ignored. Training (tokenizer-train, tokenize-corpus) and
 * evaluation (perplexity over a split) read their inputs through it.
 */
#ifndef MSRNN_TRAIN_MANIFEST_H
#define MSRNN_TRAIN_MANIFEST_H

#include <stddef.h>

#include "base/status.h"

/* The files of one split of a manifest; relative paths are taken from the manifest's folder. In
 * manifest order, into *paths (n entries, free with corpus_paths_free). MSRNN_ERR_IO if the
 * manifest cannot be read, MSRNN_ERR_FORMAT if a column is missing or a row is short,
 * MSRNN_ERR_INVALID if no row has that split (the message lists the splits there are). */
msrnn_status corpus_manifest_files(const char *manifest, const char *split, char ***paths,
                                   size_t *n);
void corpus_paths_free(char **paths, size_t n);

#endif
