/* Adapter signatures; see signature.h. */
#include "core/signature.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/linalg.h"

void sig_layer_finish(sig_layer *L)
{
    if (!L) return;
    free(L->U);
    free(L->Vt);
    free(L->s);
    free(L->Up);
    free(L->Vtp);
    L->U = L->Vt = L->s = L->Up = L->Vtp = NULL;
    L->k = L->kp = 0;
}

int sig_layer_set_pull(sig_layer *L, const float *U, const float *Vt, int k, clad_err *err)
{
    free(L->Up);
    free(L->Vtp);
    L->Up = L->Vtp = NULL;
    L->kp = 0;
    if (k < 1) return 0;
    int ku = 0, kv = 0, rc = 0;
    float *V = malloc((size_t)L->in * k * sizeof *V);
    float *Qu = malloc((size_t)L->out * k * sizeof *Qu), *Qv = malloc((size_t)L->in * k * sizeof *Qv);
    if (!V || !Qu || !Qv) {
        rc = clad_err_set(err, CLAD_ENOMEM, "signature: out of memory");
        goto cleanup;
    }
    for (int i = 0; i < k; i++)
        for (int j = 0; j < L->in; j++) V[(size_t)j * k + i] = Vt[(size_t)i * L->in + j];
    if ((rc = linalg_orth(Qu, &ku, U, L->out, k, 1e-4f, err)) || (rc = linalg_orth(Qv, &kv, V, L->in, k, 1e-4f, err)))
        goto cleanup;
    /* The pull's components are rank one with orthonormal factors, so both spaces have the same size. */
    int kk = ku < kv ? ku : kv;
    if (!kk) goto cleanup;
    L->Up = malloc((size_t)L->out * kk * sizeof *L->Up);
    L->Vtp = malloc((size_t)kk * L->in * sizeof *L->Vtp);
    if (!L->Up || !L->Vtp) {
        free(L->Up);
        free(L->Vtp);
        L->Up = L->Vtp = NULL;
        rc = clad_err_set(err, CLAD_ENOMEM, "signature: out of memory");
        goto cleanup;
    }
    for (int i = 0; i < L->out; i++)
        for (int j = 0; j < kk; j++) L->Up[(size_t)i * kk + j] = Qu[(size_t)i * ku + j];
    for (int i = 0; i < kk; i++)
        for (int j = 0; j < L->in; j++) L->Vtp[(size_t)i * L->in + j] = Qv[(size_t)j * kv + i];
    L->kp = kk;
cleanup:
    free(V);
    free(Qu);
    free(Qv);
    return rc;
}

int sig_layer_from_factors(sig_layer *L, const float *B, const float *A, float scale, int out, int in, int r,
                           double keep, clad_err *err)
{
    memset(L, 0, sizeof *L);
    L->out = out;
    L->in = in;
    if (r < 1 || r > out || r > in)
        return clad_err_set(err, CLAD_EINVAL, "signature: rank %d does not fit a %dx%d layer", r, out, in);
    int rc = 0;
    size_t rr = (size_t)r * (size_t)r;
    float *At = malloc((size_t)in * r * sizeof *At), *Qb = malloc((size_t)out * r * sizeof *Qb);
    float *Qa = malloc((size_t)in * r * sizeof *Qa), *Rb = malloc(rr * sizeof *Rb), *Ra = malloc(rr * sizeof *Ra);
    float *M = malloc(rr * sizeof *M), *Uc = malloc(rr * sizeof *Uc), *Vct = malloc(rr * sizeof *Vct);
    float *S = malloc((size_t)r * sizeof *S);
    if (!At || !Qb || !Qa || !Rb || !Ra || !M || !Uc || !Vct || !S) {
        rc = clad_err_set(err, CLAD_ENOMEM, "signature: out of memory for a rank-%d layer", r);
        goto cleanup;
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < in; j++) At[(size_t)j * r + i] = A[(size_t)i * in + j];
    if ((rc = linalg_qr(Qb, Rb, B, out, r, err)) || (rc = linalg_qr(Qa, Ra, At, in, r, err))) goto cleanup;
    /* M = s Rb Ra^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, r, scale, Rb, r, Ra, r, 0.0f, M, r);
    if ((rc = linalg_svd(Uc, S, Vct, M, r, r, err))) goto cleanup;
    double total = 0.0;
    for (int i = 0; i < r; i++) total += (double)S[i] * (double)S[i];
    L->energy = total;
    int k = 0;
    if (total > 0.0) {
        double acc = 0.0;
        while (k < r && S[k] > 1e-6f * S[0]) {
            acc += (double)S[k] * (double)S[k];
            k++;
            if (acc >= keep * total) break;
        }
    }
    L->k = k;
    if (k == 0) goto cleanup;
    L->U = malloc((size_t)out * k * sizeof *L->U);
    L->Vt = malloc((size_t)k * in * sizeof *L->Vt);
    L->s = malloc((size_t)k * sizeof *L->s);
    if (!L->U || !L->Vt || !L->s) {
        sig_layer_finish(L);
        rc = clad_err_set(err, CLAD_ENOMEM, "signature: out of memory");
        goto cleanup;
    }
    /* U = Qb Uc[:, :k] (out,k); Vt = (Qa Vc[:, :k])^T = Vct[:k, :] Qa^T (k,in). */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, k, r, 1.0f, Qb, r, Uc, r, 0.0f, L->U, k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, in, r, 1.0f, Vct, r, Qa, r, 0.0f, L->Vt, in);
    memcpy(L->s, S, (size_t)k * sizeof *S);
cleanup:
    free(At);
    free(Qb);
    free(Qa);
    free(Rb);
    free(Ra);
    free(M);
    free(Uc);
    free(Vct);
    free(S);
    return rc;
}

int signature_compute(signature *sig, const model *m, const adapter *a, double keep, clad_err *err)
{
    memset(sig, 0, sizeof *sig);
    sig->n_linear = m->n_linear;
    for (int li = 0; li < m->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        sig->layer[li].out = L->out;
        sig->layer[li].in = L->in;
        if (!a->rank[li]) continue;
        int rc = sig_layer_from_factors(&sig->layer[li], param_set_ptr(&a->params, a->B[li]),
                                        param_set_ptr(&a->params, a->A[li]), adapter_scale(a, li), L->out, L->in,
                                        a->rank[li], keep, err);
        if (rc) {
            clad_err_prefix(err, "layer '%s': ", L->name);
            signature_finish(sig);
            return rc;
        }
    }
    return 0;
}

void signature_finish(signature *sig)
{
    if (!sig) return;
    for (int li = 0; li < sig->n_linear && li < MODEL_MAX_LINEARS; li++) sig_layer_finish(&sig->layer[li]);
}

size_t signature_floats(const signature *sig)
{
    size_t n = 0;
    for (int li = 0; li < sig->n_linear; li++) {
        const sig_layer *L = &sig->layer[li];
        n += (size_t)L->k * ((size_t)L->out + (size_t)L->in + 1) + (size_t)L->kp * ((size_t)L->out + (size_t)L->in);
    }
    return n;
}

void signature_layer_delta(float *dW, const signature *sig, int li)
{
    const sig_layer *L = &sig->layer[li];
    memset(dW, 0, (size_t)L->out * (size_t)L->in * sizeof *dW);
    if (!L->k) return;
    float *Us = malloc((size_t)L->out * (size_t)L->k * sizeof *Us);
    if (!Us) abort(); /* the size of the signature, which exists */
    for (int i = 0; i < L->out; i++)
        for (int j = 0; j < L->k; j++) Us[(size_t)i * L->k + j] = L->U[(size_t)i * L->k + j] * L->s[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->out, L->in, L->k, 1.0f, Us, L->k, L->Vt, L->in, 0.0f,
                dW, L->in);
    free(Us);
}
