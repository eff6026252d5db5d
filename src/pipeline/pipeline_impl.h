/* Internal helpers shared by the files of src/pipeline (not installed). */
#ifndef SQZ_PIPELINE_IMPL_H
#define SQZ_PIPELINE_IMPL_H

#include "sqz/model.h"

/* Tensors are indexed as sqz_sens_tensor's: layer l's linear k at l·7 + k, the output
 * head at n_layer·7 (with a tied embedding, both slots), an untied embedding after it. */
typedef struct sqz_pipe_swap {
    int idx;
    sqz_tensor tmp;
    const sqz_tensor *orig_a, *orig_b;
} sqz_pipe_swap;

/* The model's tensor idx. */
const sqz_tensor *sqz_pipe_tensor(sqz_model *m, int idx);
/* Replaces tensor idx of m by an F32 tensor over data (idx's shape; data stays the
 * caller's) until sqz_pipe_swap_out puts the original back. */
void sqz_pipe_swap_in(sqz_model *m, sqz_pipe_swap *s, int idx, const float *data);
void sqz_pipe_swap_out(sqz_model *m, sqz_pipe_swap *s);

#endif
