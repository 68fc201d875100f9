/* convert.h — turn a trained llama model into another architecture of the table (`msrnn convert`).
 *
 * Every tensor the target's parameter list shares with llama is copied as it is (same name, type
 * and bytes, by reference from the input's mapping); the target's new tensors are written by their
 * initialisation rule (a gate of zeros, a norm of ones, or values the part computes, such as
 * DiJiang's P and γ); `llama.*` keys become `{arch}.*`, the
 * target part writes its own keys, every other key (general.*, tokenizer.*) is copied. The output
 * is written atomically: on any failure nothing is left at the output path.
 */
#ifndef MSRNN_MODEL_CONVERT_H
#define MSRNN_MODEL_CONVERT_H

#include "base/status.h"
#include "parts/part.h"

/* method: the target's own hyper-parameters (hparams.segment, .memory_rule, .features, .sampler,
 * .seed...); the shared ones
 * come from the input file. MSRNN_ERR_UNSUPPORTED for an input that is not a llama model;
 * MSRNN_ERR_INVALID for an unknown target or one with a tensor it cannot initialise. */
msrnn_status model_convert(const char *in_path, const char *arch, const hparams *method,
                           const char *out_path);

#endif
