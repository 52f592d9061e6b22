/* Thin SVD/QR wrappers over LAPACK and subspace projections; see linalg.h.
 *
 * LAPACK is column-major. A row-major (m,n) buffer read as column-major is the transpose (n,m), so the SVD
 * is taken of A^T = V S U^T: LAPACK's left factor (n,k) column-major is exactly Vt (k,n) row-major and its
 * right factor (k,m) column-major is exactly U (m,k) row-major. No transposes are needed. The QR does
 * transpose, because it factors the columns of A itself.
 */
#include "core/linalg.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Fortran LAPACK prototypes (OpenBLAS ships the symbols, Debian ships no header for them). */
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s, float *u,
             const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork, int *iwork, int *info);
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work, const int *lwork,
             int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau, float *work,
             const int *lwork, int *info);

static int check_dims(int m, int n, clad_err *err)
{
    if (m < 1 || n < 1 || m > LINALG_MAX_DIM || n > LINALG_MAX_DIM)
        return clad_err_set(err, CLAD_EINVAL, "linalg: matrix %dx%d has a dimension outside [1, %d]", m, n,
                            LINALG_MAX_DIM);
    if ((long)m * (long)n > LINALG_MAX_ELEMS)
        return clad_err_set(err, CLAD_ETOOLARGE, "linalg: matrix %dx%d is over %ld elements", m, n,
                            LINALG_MAX_ELEMS);
    return 0;
}

/* LAPACK reports the optimal workspace as a float; round up and keep it sane. */
static int work_size(float q, int floor_)
{
    double w = ceil((double)q);
    if (!(w >= (double)floor_)) return floor_;
    if (w > (double)LINALG_MAX_ELEMS * 8) return (int)(LINALG_MAX_ELEMS * 8);
    return (int)w;
}

int linalg_svd(float *U, float *S, float *Vt, const float *A, int m, int n, clad_err *err)
{
    int rc = check_dims(m, n, err);
    if (rc) return rc;
    int k = m < n ? m : n;
    int want = U || Vt;
    const char *jobz = want ? "S" : "N";
    size_t mn = (size_t)m * (size_t)n;
    float *a = malloc(mn * sizeof *a);
    float *u = want ? malloc((size_t)m * (size_t)k * sizeof *u) : NULL;
    float *vt = want ? malloc((size_t)k * (size_t)n * sizeof *vt) : NULL;
    int *iwork = malloc(8 * (size_t)k * sizeof *iwork);
    float *work = NULL;
    if (!a || !iwork || (want && (!u || !vt))) {
        rc = clad_err_set(err, CLAD_ENOMEM, "linalg: out of memory for a %dx%d SVD", m, n);
        goto cleanup;
    }
    memcpy(a, A, mn * sizeof *a);
    /* LAPACK sees A^T (n,m); its "u" (n,k) is our Vt and its "vt" (k,m) is our U. */
    int lm = n, ln = m, lda = n, ldu = n, ldvt = k, info = 0, lwork = -1;
    float q = 0.0f;
    float dummy = 0.0f;
    sgesdd_(jobz, &lm, &ln, a, &lda, S, want ? vt : &dummy, &ldu, want ? u : &dummy, &ldvt, &q, &lwork, iwork,
            &info);
    if (info) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "linalg: sgesdd workspace query failed (info %d)", info);
        goto cleanup;
    }
    lwork = work_size(q, 1);
    work = malloc((size_t)lwork * sizeof *work);
    if (!work) {
        rc = clad_err_set(err, CLAD_ENOMEM, "linalg: out of memory for the SVD workspace");
        goto cleanup;
    }
    sgesdd_(jobz, &lm, &ln, a, &lda, S, want ? vt : &dummy, &ldu, want ? u : &dummy, &ldvt, work, &lwork,
            iwork, &info);
    if (info) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "linalg: sgesdd failed on a %dx%d matrix (info %d)", m, n, info);
        goto cleanup;
    }
    if (U) memcpy(U, u, (size_t)m * (size_t)k * sizeof *u);
    if (Vt) memcpy(Vt, vt, (size_t)k * (size_t)n * sizeof *vt);
cleanup:
    free(a);
    free(u);
    free(vt);
    free(iwork);
    free(work);
    return rc;
}

int linalg_qr(float *Q, float *R, const float *A, int m, int n, clad_err *err)
{
    int rc = check_dims(m, n, err);
    if (rc) return rc;
    if (m < n) return clad_err_set(err, CLAD_EINVAL, "linalg: thin QR needs rows >= columns (got %dx%d)", m, n);
    float *a = malloc((size_t)m * (size_t)n * sizeof *a), *tau = malloc((size_t)n * sizeof *tau), *work = NULL;
    if (!a || !tau) {
        rc = clad_err_set(err, CLAD_ENOMEM, "linalg: out of memory for a %dx%d QR", m, n);
        goto cleanup;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) a[i + (size_t)j * m] = A[(size_t)i * n + j];
    int info = 0, lwork = -1;
    float q1 = 0.0f, q2 = 0.0f;
    sgeqrf_(&m, &n, a, &m, tau, &q1, &lwork, &info);
    if (!info) sorgqr_(&m, &n, &n, a, &m, tau, &q2, &lwork, &info);
    if (info) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "linalg: QR workspace query failed (info %d)", info);
        goto cleanup;
    }
    lwork = work_size(q1 > q2 ? q1 : q2, n);
    work = malloc((size_t)lwork * sizeof *work);
    if (!work) {
        rc = clad_err_set(err, CLAD_ENOMEM, "linalg: out of memory for the QR workspace");
        goto cleanup;
    }
    sgeqrf_(&m, &n, a, &m, tau, work, &lwork, &info);
    if (info) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "linalg: sgeqrf failed (info %d)", info);
        goto cleanup;
    }
    if (R)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) R[(size_t)i * n + j] = j >= i ? a[i + (size_t)j * m] : 0.0f;
    sorgqr_(&m, &n, &n, a, &m, tau, work, &lwork, &info);
    if (info) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "linalg: sorgqr failed (info %d)", info);
        goto cleanup;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) Q[(size_t)i * n + j] = a[i + (size_t)j * m];
cleanup:
    free(a);
    free(tau);
    free(work);
    return rc;
}

int linalg_orth(float *Q, int *k, const float *A, int m, int n, float rtol, clad_err *err)
{
    *k = 0;
    int rc = check_dims(m, n, err);
    if (rc) return rc;
    int kk = m < n ? m : n;
    float *u = malloc((size_t)m * (size_t)kk * sizeof *u), *s = malloc((size_t)kk * sizeof *s);
    if (!u || !s) {
        free(u);
        free(s);
        return clad_err_set(err, CLAD_ENOMEM, "linalg: out of memory for an orthonormal basis");
    }
    rc = linalg_svd(u, s, NULL, A, m, n, err);
    if (!rc) {
        int r = 0;
        while (r < kk && s[r] > rtol * s[0] && s[r] > 0.0f) r++;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < r; j++) Q[(size_t)i * r + j] = u[(size_t)i * kk + j];
        *k = r;
    }
    free(u);
    free(s);
    return rc;
}

double linalg_frob2(const float *A, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)A[i] * (double)A[i];
    return s;
}

void linalg_core(float *C, const float *X, int m, int n, const float *U, int p, const float *Vt, int q)
{
    if (p < 1 || q < 1) return;
    /* T (m,q) = X Vt^T, then C (p,q) = U^T T. */
    float *T = malloc((size_t)m * (size_t)q * sizeof *T);
    if (!T) abort(); /* smaller than the caller's X, which exists: a failure here is not request-sized */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, q, n, 1.0f, X, n, Vt, n, 0.0f, T, q);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p, q, m, 1.0f, U, p, T, q, 0.0f, C, q);
    free(T);
}

double linalg_inside_energy(const float *X, int m, int n, const float *U, int p, const float *Vt, int q)
{
    if (p < 1 || q < 1) return 0.0;
    float *C = malloc((size_t)p * (size_t)q * sizeof *C);
    if (!C) abort();
    linalg_core(C, X, m, n, U, p, Vt, q);
    double e = linalg_frob2(C, (size_t)p * (size_t)q);
    free(C);
    return e;
}

void linalg_project_out(float *out, const float *X, int m, int n, const float *U, int p, const float *Vt, int q)
{
    if (out != X) memcpy(out, X, (size_t)m * (size_t)n * sizeof *out);
    if (p < 1 || q < 1) return;
    float *C = malloc((size_t)p * (size_t)q * sizeof *C), *T = malloc((size_t)m * (size_t)q * sizeof *T);
    if (!C || !T) abort();
    linalg_core(C, X, m, n, U, p, Vt, q);
    /* out -= U C Vt */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, q, p, 1.0f, U, p, C, q, 0.0f, T, q);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, q, -1.0f, T, q, Vt, n, 1.0f, out, n);
    free(C);
    free(T);
}

int linalg_energy_rank(const float *s, int k, double tau)
{
    double total = 0.0;
    for (int i = 0; i < k; i++) total += (double)s[i] * (double)s[i];
    if (!(total > 0.0)) return 0;
    double acc = 0.0;
    for (int i = 0; i < k; i++) {
        acc += (double)s[i] * (double)s[i];
        if (acc >= tau * total * (1.0 - 1e-12)) return i + 1;
    }
    return k;
}
