/* Tests of core/linalg: SVD and QR against reconstruction and naive products, orthonormal bases,
 * projections and the energy rank. */
#include "tests/test.h"

#include "core/linalg.h"
#include "core/rng.h"

static void fill(float *x, size_t n, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

/* C (m,n) = A (m,k) B (k,n), naive, in double. */
static void matmul(float *C, const float *A, const float *B, int m, int k, int n)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int q = 0; q < k; q++) s += (double)A[(size_t)i * k + q] * (double)B[(size_t)q * n + j];
            C[(size_t)i * n + j] = (float)s;
        }
}

/* max |Q^T Q - I| for Q (m,k) with orthonormal columns. */
static double ortho_error(const float *Q, int m, int k)
{
    double worst = 0.0;
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
            double s = 0.0;
            for (int i = 0; i < m; i++) s += (double)Q[(size_t)i * k + a] * (double)Q[(size_t)i * k + b];
            double e = fabs(s - (a == b ? 1.0 : 0.0));
            if (e > worst) worst = e;
        }
    return worst;
}

static void check_svd(int m, int n, uint64_t seed)
{
    int k = m < n ? m : n;
    float *A = malloc(sizeof(float) * (size_t)m * n), *U = malloc(sizeof(float) * (size_t)m * k);
    float *S = malloc(sizeof(float) * (size_t)k), *Vt = malloc(sizeof(float) * (size_t)k * n);
    float *US = malloc(sizeof(float) * (size_t)m * k), *R = malloc(sizeof(float) * (size_t)m * n);
    fill(A, (size_t)m * n, seed);
    CHECK_INT_EQ(linalg_svd(U, S, Vt, A, m, n, NULL), 0);
    for (int i = 0; i + 1 < k; i++) CHECK(S[i] >= S[i + 1] && S[i + 1] >= 0.0f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) US[(size_t)i * k + j] = U[(size_t)i * k + j] * S[j];
    matmul(R, US, Vt, m, k, n);
    CHECK_ARRAY_NEAR(R, A, (size_t)m * n, 1e-4, 1e-4);
    CHECK(ortho_error(U, m, k) < 1e-5);
    /* rows of Vt orthonormal: columns of Vt^T */
    float *V = malloc(sizeof(float) * (size_t)n * k);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < n; j++) V[(size_t)j * k + i] = Vt[(size_t)i * n + j];
    CHECK(ortho_error(V, n, k) < 1e-5);
    /* values only agree with the full decomposition */
    float *S2 = malloc(sizeof(float) * (size_t)k);
    CHECK_INT_EQ(linalg_svd(NULL, S2, NULL, A, m, n, NULL), 0);
    CHECK_ARRAY_NEAR(S2, S, (size_t)k, 1e-5, 1e-5);
    free(A); free(U); free(S); free(Vt); free(US); free(R); free(V); free(S2);
}

TEST(cl_linalg_svd_reconstructs_tall_wide_and_square)
{
    check_svd(37, 11, 1);
    check_svd(9, 50, 2);
    check_svd(24, 24, 3);
    check_svd(1, 7, 4);
}

TEST(cl_linalg_svd_recovers_known_spectrum)
{
    /* A = Q1 diag(5,3,1,0) Q2^T with orthonormal Q1 (20,4), Q2 (12,4) from QR. */
    int m = 20, n = 12, r = 4;
    float *G1 = malloc(sizeof(float) * m * r), *G2 = malloc(sizeof(float) * n * r);
    float *Q1 = malloc(sizeof(float) * m * r), *Q2 = malloc(sizeof(float) * n * r);
    fill(G1, (size_t)m * r, 5);
    fill(G2, (size_t)n * r, 6);
    CHECK_INT_EQ(linalg_qr(Q1, NULL, G1, m, r, NULL), 0);
    CHECK_INT_EQ(linalg_qr(Q2, NULL, G2, n, r, NULL), 0);
    const float sv[4] = {5, 3, 1, 0};
    float *A = calloc((size_t)m * n, sizeof(float));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int q = 0; q < r; q++) A[(size_t)i * n + j] += Q1[(size_t)i * r + q] * sv[q] * Q2[(size_t)j * r + q];
    float S[12];
    CHECK_INT_EQ(linalg_svd(NULL, S, NULL, A, m, n, NULL), 0);
    CHECK_NEAR(S[0], 5.0, 1e-5);
    CHECK_NEAR(S[1], 3.0, 1e-5);
    CHECK_NEAR(S[2], 1.0, 1e-5);
    for (int i = 3; i < 12; i++) CHECK_NEAR(S[i], 0.0, 1e-5);
    /* energy 25 + 9 + 1 = 35: 25/35 = 0.714, 34/35 = 0.971 */
    CHECK_INT_EQ(linalg_energy_rank(S, 12, 0.7), 1);
    CHECK_INT_EQ(linalg_energy_rank(S, 12, 0.9), 2);
    CHECK_INT_EQ(linalg_energy_rank(S, 12, 0.99), 3);
    CHECK_INT_EQ(linalg_energy_rank(S, 12, 1.0), 3);
    float Z[3] = {0, 0, 0};
    CHECK_INT_EQ(linalg_energy_rank(Z, 3, 0.9), 0);
    /* orth finds the 3-dimensional column space */
    float *Q = malloc(sizeof(float) * m * n);
    int k = -1;
    CHECK_INT_EQ(linalg_orth(Q, &k, A, m, n, 1e-4f, NULL), 0);
    CHECK_INT_EQ(k, 3);
    CHECK(ortho_error(Q, m, k) < 1e-5);
    free(G1); free(G2); free(Q1); free(Q2); free(A); free(Q);
}

TEST(cl_linalg_qr_reconstructs)
{
    int m = 30, n = 7;
    float *A = malloc(sizeof(float) * m * n), *Q = malloc(sizeof(float) * m * n), *R = malloc(sizeof(float) * n * n);
    float *QR = malloc(sizeof(float) * m * n);
    fill(A, (size_t)m * n, 9);
    CHECK_INT_EQ(linalg_qr(Q, R, A, m, n, NULL), 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) CHECK(R[(size_t)i * n + j] == 0.0f);
    matmul(QR, Q, R, m, n, n);
    CHECK_ARRAY_NEAR(QR, A, (size_t)m * n, 1e-5, 1e-5);
    CHECK(ortho_error(Q, m, n) < 1e-5);
    clad_err e = {0};
    CHECK_INT_EQ(linalg_qr(Q, R, A, 3, 5, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "rows >= columns") != NULL);
    free(A); free(Q); free(R); free(QR);
}

TEST(cl_linalg_refuses_bad_sizes)
{
    float a[4] = {0}, s[2];
    clad_err e = {0};
    CHECK_INT_EQ(linalg_svd(NULL, s, NULL, a, 0, 2, &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(linalg_svd(NULL, s, NULL, a, 65536, 65536, &e), CLAD_ETOOLARGE);
}

TEST(cl_linalg_projections_match_naive)
{
    int m = 16, n = 10, p = 3, q = 2;
    float *X = malloc(sizeof(float) * m * n), *G = malloc(sizeof(float) * m * p), *H = malloc(sizeof(float) * n * q);
    float *U = malloc(sizeof(float) * m * p), *V = malloc(sizeof(float) * n * q), *Vt = malloc(sizeof(float) * q * n);
    fill(X, (size_t)m * n, 11);
    fill(G, (size_t)m * p, 12);
    fill(H, (size_t)n * q, 13);
    CHECK_INT_EQ(linalg_qr(U, NULL, G, m, p, NULL), 0);
    CHECK_INT_EQ(linalg_qr(V, NULL, H, n, q, NULL), 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < q; j++) Vt[(size_t)j * n + i] = V[(size_t)i * q + j];
    /* naive P = U U^T X V V^T */
    float *UUt = malloc(sizeof(float) * m * m), *VVt = malloc(sizeof(float) * n * n);
    float *T = malloc(sizeof(float) * m * n), *P = malloc(sizeof(float) * m * n), *Ut = malloc(sizeof(float) * p * m);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < p; j++) Ut[(size_t)j * m + i] = U[(size_t)i * p + j];
    matmul(UUt, U, Ut, m, p, m);
    matmul(VVt, V, Vt, n, q, n);
    matmul(T, UUt, X, m, m, n);
    matmul(P, T, VVt, m, n, n);
    double inside = linalg_frob2(P, (size_t)m * n);
    CHECK_NEAR(linalg_inside_energy(X, m, n, U, p, Vt, q), inside, 1e-4 * inside + 1e-6);
    float *out = malloc(sizeof(float) * m * n), *want = malloc(sizeof(float) * m * n);
    for (int i = 0; i < m * n; i++) want[i] = X[i] - P[i];
    linalg_project_out(out, X, m, n, U, p, Vt, q);
    CHECK_ARRAY_NEAR(out, want, (size_t)m * n, 1e-5, 1e-5);
    /* Pythagoras: inside + outside = total */
    CHECK_NEAR(inside + linalg_frob2(out, (size_t)m * n), linalg_frob2(X, (size_t)m * n), 1e-3);
    /* in place, and an empty basis leaves X alone */
    memcpy(out, X, sizeof(float) * m * n);
    linalg_project_out(out, out, m, n, U, p, Vt, q);
    CHECK_ARRAY_NEAR(out, want, (size_t)m * n, 1e-5, 1e-5);
    linalg_project_out(out, X, m, n, U, 0, Vt, q);
    CHECK_ARRAY_NEAR(out, X, (size_t)m * n, 0, 0);
    CHECK(linalg_inside_energy(X, m, n, U, p, Vt, 0) == 0.0);
    free(X); free(G); free(H); free(U); free(V); free(Vt); free(UUt); free(VVt); free(T); free(P); free(Ut);
    free(out); free(want);
}
