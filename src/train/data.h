/* data.h — training data, one header per concern:
 *   shard.h     token shards: the format, the atomic writer, the mapped reader
 *   loader.h    training windows of T + 1 tokens, shuffled per epoch, resumable
 *   manifest.h  the files of one split of a corpus manifest
 *   corpus.h    tokenizing files into a shard
 * Include the one you need; this header includes all four. */
#ifndef MSRNN_TRAIN_DATA_H
#define MSRNN_TRAIN_DATA_H

#include "train/corpus.h"
#include "train/loader.h"
#include "train/manifest.h"
#include "train/shard.h"

#endif
