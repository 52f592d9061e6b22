/* Layers of the core engine: forward and backward passes on plain float arrays.
 *
 * Conventions (from llm.c): arguments are outputs first, then inputs, then dimensions; every buffer has
 * its shape in a comment; backward passes ACCUMULATE (+=) into every gradient they are given, so the caller
 * zeroes gradients once per step; a NULL gradient pointer means "not needed" and skips that work (frozen
 * weights). All matrices are row-major. Each fast kernel (cblas) has a `_naive` twin with plain loops that
 * the tests compare against; the naive twins are for tests only.
 *
 * Nothing here allocates, does I/O or keeps state; scratch buffers are passed in by the caller.
 *
 * Determinism: same inputs, same bits, as long as the OpenBLAS thread count is the same; sgemm may round
 * differently when it splits work over a different number of threads, so pin it for reproducible runs.
 */
#ifndef CLAD_CORE_LAYERS_H
#define CLAD_CORE_LAYERS_H

#include <stddef.h>

/* ---- linear: y = x W^T + b -------------------------------------------------------------------- */
/* y (N,out), x (N,in), W (out,in), b (out) or NULL. Overwrites y. */
void linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out);
void linear_forward_naive(float *y, const float *x, const float *W, const float *b,
                          int N, int in, int out);
/* dx (N,in) += dy W;  dW (out,in) += dy^T x;  db (out) += sum_n dy. Any of dx, dW, db may be NULL. */
void linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                     int N, int in, int out);
void linear_backward_naive(float *dx, float *dW, float *db, const float *dy, const float *x,
                           const float *W, int N, int in, int out);
/* The same, but dx is overwritten (dx = dy W) instead of accumulated: no zeroing pass before it. dW and db
 * still accumulate. */
void linear_backward_set(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                         int N, int in, int out);

/* ---- a linear with its epilogue, fused ----------------------------------------------------------- */
typedef enum linear_act { LINEAR_ACT_NONE, LINEAR_ACT_GELU, LINEAR_ACT_GELU_ERF } linear_act;

/* What linear_forward_fused does to each block of y after x W^T + b, while the block is still in cache. */
typedef struct linear_epilogue {
    const float *A, *B;   /* LoRA factors A (r,in), B (out,r); unused when r == 0 */
    float *xa;            /* (N,r) receives x A^T, kept for backward */
    float scale;          /* the LoRA scale, alpha / r */
    int r;
    const float *res;     /* (N,out) residual added last, or NULL */
    float *act;           /* (N,out) receives act_kind(y), or NULL */
    linear_act act_kind;  /* GELU (tanh form) or exact GELU; NONE when act is NULL */
} linear_epilogue;

/* y (N,out) = res + ((x W^T + b) + scale (x A^T) B^T), then act (N,out) = GELU(y): the operations of
 * linear_forward, lora_forward, residual_forward and gelu_forward (or gelu_erf_forward) one after another,
 * in the same order, but each task of the bound pool finishes its block of y (bias, LoRA, residual, GELU)
 * right after its product, instead of four sweeps over memory. The products are cut into other blocks than
 * lora_forward's, which OpenBLAS may round differently: equal to the unfused sequence to float rounding,
 * and bit-identical for any thread count. e may be NULL (a plain linear). Overwrites y, xa and act. */
void linear_forward_fused(float *y, const float *x, const float *W, const float *b, const linear_epilogue *e,
                          int N, int in, int out);
void linear_forward_fused_naive(float *y, const float *x, const float *W, const float *b, const linear_epilogue *e,
                                int N, int in, int out);

/* ---- LoRA branch of a linear: y += scale * (x A^T) B^T ------------------------------------------ */
/* Never materialises B A. y (N,out) is ADDED to; xa (N,r) receives x A^T and must be kept for backward.
 * A (r,in), B (out,r), scale = alpha / r. r == 0 is a no-op. */
void lora_forward(float *y, float *xa, const float *x, const float *A, const float *B, float scale,
                  int N, int in, int out, int r);
void lora_forward_naive(float *y, float *xa, const float *x, const float *A, const float *B, float scale,
                        int N, int in, int out, int r);
/* With g = scale * dy B (N,r), computed into scratch (N,r):
 * dx (N,in) += g A;  dA (r,in) += g^T x;  dB (out,r) += scale * dy^T xa. dx, dA, dB may be NULL. */
void lora_backward(float *dx, float *dA, float *dB, float *scratch, const float *dy, const float *x,
                   const float *xa, const float *A, const float *B, float scale,
                   int N, int in, int out, int r);
/* (scratch is not touched, and may be NULL, when dx and dA are both NULL.) */
void lora_backward_naive(float *dx, float *dA, float *dB, float *scratch, const float *dy,
                         const float *x, const float *xa, const float *A, const float *B, float scale,
                         int N, int in, int out, int r);

/* ---- LayerNorm over the last dimension (eps 1e-5) ----------------------------------------------- */
/* out (N,C), mean (N), rstd (N) saved for backward, x (N,C), w (C), b (C). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C);
/* The same with an explicit eps (timm's ViTs use 1e-6, Hugging Face's 1e-12); eps >= 0. The backward pass
 * needs no eps: it works from the saved rstd. */
void layernorm_forward_eps(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int N, int C, float eps);
/* dx (N,C) += ..., dw (C) += ..., db (C) += ...; dw/db may be NULL (frozen). */
/* (dx may be NULL too, when nothing below the layer needs a gradient.) */
void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C);

/* ---- GELU (tanh approximation, as GPT-2 / PyTorch approximate="tanh") --------------------------- */
void gelu_forward(float *out, const float *x, size_t n);
void gelu_backward(float *dx, const float *x, const float *dout, size_t n); /* dx += gelu'(x) dout */
void gelu_backward_set(float *dx, const float *x, const float *dout, size_t n); /* dx = gelu'(x) dout */
/* ---- GELU, exact: 0.5 x (1 + erf(x / sqrt 2)), PyTorch's default nn.GELU() as timm and HF ViTs use it -- */
void gelu_erf_forward(float *out, const float *x, size_t n);
void gelu_erf_backward(float *dx, const float *x, const float *dout, size_t n); /* dx += (Phi(x) + x phi(x)) dout */
void gelu_erf_backward_set(float *dx, const float *x, const float *dout, size_t n); /* dx = (...) dout */

/* ---- row softmax --------------------------------------------------------------------------------- */
/* out (N,K) = softmax of each row of in (N,K), numerically stable (the row max is subtracted first);
 * out may equal in. Probabilities below FLT_MIN come out as 0. Used by attention; its backward lives in
 * attention_backward. */
void softmax_forward(float *out, const float *in, int N, int K);

/* ---- residual: out = a + b ---------------------------------------------------------------------- */
void residual_forward(float *out, const float *a, const float *b, size_t n);
void residual_backward(float *da, float *db, const float *dout, size_t n); /* da += dout; db += dout */
/* (da or db may be NULL.) */

/* ---- multi-head softmax self-attention (bidirectional, as in ViT) ------------------------------- */
/* qkv (B,T,3C): per token [q | k | v], head h uses columns h*hs .. h*hs+hs-1 of each, hs = C/NH.
 * out (B,T,C), att (B,NH,T,T) receives the softmax probabilities, kept for backward.
 * scores = q k^T / sqrt(hs). */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void attention_forward_naive(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
/* dqkv (B,T,3C) +=; scratch (T,T) is overwritten. */
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH);
void attention_backward_naive(float *dqkv, float *scratch, const float *dout, const float *qkv,
                              const float *att, int B, int T, int C, int NH);
/* The same, but dqkv is overwritten instead of accumulated. */
void attention_backward_set(float *dqkv, float *scratch, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH);

/* ---- patches, class token, position embedding (ViT input) --------------------------------------- */
/* img (B,Cin,H,W) (PyTorch's NCHW) -> patches (B,P,Cin*ph*pw), P = (H/ph)*(W/pw), patches in row-major
 * order, each patch vector ordered (c, y, x) so that patch_embed.weight (D, Cin*ph*pw) equals a Conv2d
 * weight (D,Cin,ph,pw) reshaped. H % ph == 0 and W % pw == 0. */
void patchify_forward(float *patches, const float *img, int B, int Cin, int H, int W, int ph, int pw);
/* tokens (B,T,C), T = P+1: token 0 = cls + pos[0], token t = emb[t-1] + pos[t].
 * emb (B,P,C), cls (C), pos (T,C). */
void tokens_forward(float *tokens, const float *emb, const float *cls, const float *pos,
                    int B, int P, int C);
/* demb (B,P,C) +=, dcls (C) +=, dpos (T,C) +=; dcls/dpos may be NULL (frozen). */
void tokens_backward(float *demb, float *dcls, float *dpos, const float *dtokens, int B, int P, int C);
/* (demb may be NULL too, when the patch embedding is frozen.) */

/* ---- softmax cross-entropy ---------------------------------------------------------------------- */
/* probs (N,K), losses (N) from logits (N,K) and targets (N) in [0,K). Numerically stable.
 * Returns the mean loss. */
float crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
                           int N, int K);
/* dlogits (N,K) += (probs - onehot(target)) * dloss, with dloss usually 1/N. */
void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss,
                           int N, int K);

#endif
