/* ViT input: image to patch vectors, and patch embeddings to tokens (class token + position embedding).
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <string.h>

void patchify_forward(float *patches, const float *img, int B, int Cin, int H, int W, int ph, int pw)
{
    assert(B >= 0 && Cin > 0 && ph > 0 && pw > 0 && H % ph == 0 && W % pw == 0);
    int gy = H / ph, gx = W / pw;      /* patch grid */
    size_t pd = (size_t)Cin * ph * pw; /* patch vector length */
    for (int b = 0; b < B; b++) {
        const float *im = img + (size_t)b * Cin * H * W;
        for (int py = 0; py < gy; py++) {
            for (int px = 0; px < gx; px++) {
                float *p = patches + ((size_t)b * gy * gx + (size_t)py * gx + px) * pd;
                /* Ordered (c, y, x), like a Conv2d weight (D,Cin,ph,pw) flattened; each row of a patch is
                 * contiguous in the image, so it is one copy. */
                for (int c = 0; c < Cin; c++)
                    for (int y = 0; y < ph; y++)
                        memcpy(p + ((size_t)c * ph + y) * pw,
                               im + ((size_t)c * H + (size_t)py * ph + y) * W + (size_t)px * pw,
                               (size_t)pw * sizeof *p);
            }
        }
    }
}

void tokens_forward(float *tokens, const float *emb, const float *cls, const float *pos,
                    int B, int P, int C)
{
    assert(B >= 0 && P >= 0 && C > 0);
    int T = P + 1;
    for (int b = 0; b < B; b++) {
        float *tk = tokens + (size_t)b * T * C;
        const float *e = emb + (size_t)b * P * C;
        for (int c = 0; c < C; c++) tk[c] = cls[c] + pos[c];
        for (size_t i = 0; i < (size_t)P * C; i++) tk[C + i] = e[i] + pos[C + i];
    }
}

void tokens_backward(float *demb, float *dcls, float *dpos, const float *dtokens, int B, int P, int C)
{
    assert(B >= 0 && P >= 0 && C > 0);
    int T = P + 1;
    for (int b = 0; b < B; b++) {
        const float *dt = dtokens + (size_t)b * T * C;
        if (demb) {
            float *de = demb + (size_t)b * P * C;
            for (size_t i = 0; i < (size_t)P * C; i++) de[i] += dt[C + i];
        }
        if (dcls)
            for (int c = 0; c < C; c++) dcls[c] += dt[c];
        if (dpos)
            for (size_t i = 0; i < (size_t)T * C; i++) dpos[i] += dt[i];
    }
}
