/* Named parameter tensors living in ONE allocation (llm.c style).
 *
 * A param_set is a table of (name, shape, offset) plus one float buffer. Gradients and optimizer moments
 * are plain buffers of the same total length, so the optimizer is one loop and a checkpoint is one write.
 * Names follow PyTorch conventions ("blocks.0.qkv.weight") because they are used in files and the API.
 */
#ifndef CLAD_CORE_PARAMS_H
#define CLAD_CORE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

#define PARAM_NAME_MAX 64
#define PARAM_MAX_DIMS 4

typedef struct param_tensor {
    char name[PARAM_NAME_MAX];
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t offset;  /* in floats, into param_set.data */
    size_t numel;
    bool decay;     /* weight decay applies (matrices yes; biases, norms, embeddings no) */
} param_tensor;

typedef struct param_set {
    int n;
    int cap;
    param_tensor *t;
    size_t total;   /* floats */
    float *data;    /* (total), NULL until param_set_alloc */
} param_set;

void param_set_init(param_set *p);
void param_set_finish(param_set *p);  /* accepts a zeroed or finished set */
/* Declares a tensor (before alloc); returns its index. Shapes are small and fixed by configs: asserts. */
int param_set_add(param_set *p, const char *name, int ndim, const int *shape, bool decay);
/* Allocates data (zeroed) once every tensor is declared. */
int param_set_alloc(param_set *p, clad_err *err);
int param_set_find(const param_set *p, const char *name);  /* index or -1 */
static inline float *param_set_ptr(const param_set *p, int i) { return p->data + p->t[i].offset; }
/* True if both sets have the same names, shapes and order. */
bool param_set_same_layout(const param_set *a, const param_set *b);

#endif
