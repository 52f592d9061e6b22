/* Softmax cross-entropy over K classes, numerically stable for any finite logits.
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <math.h>

float crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets,
                           int N, int K)
{
    assert(N >= 0 && K > 0);
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * K;
        float *p = probs + (size_t)n * K;
        int t = targets[n];
        assert(t >= 0 && t < K);
        float mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double s = 0.0;
        for (int k = 0; k < K; k++) {
            float e = expf(z[k] - mx);
            p[k] = e;
            s += (double)e;
        }
        float inv = (float)(1.0 / s);
        for (int k = 0; k < K; k++) p[k] *= inv;
        /* -log softmax_t = log(sum) - (z_t - max), which stays finite even when p_t underflows to 0. */
        double loss = log(s) - ((double)z[t] - (double)mx);
        losses[n] = (float)loss;
        total += loss;
    }
    return N > 0 ? (float)(total / N) : 0.0f;
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss,
                           int N, int K)
{
    assert(N >= 0 && K > 0);
    for (int n = 0; n < N; n++) {
        float *dz = dlogits + (size_t)n * K;
        const float *p = probs + (size_t)n * K;
        int t = targets[n];
        assert(t >= 0 && t < K);
        for (int k = 0; k < K; k++) dz[k] += (p[k] - (k == t ? 1.0f : 0.0f)) * dloss;
    }
}
