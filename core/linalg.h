/* Small dense linear algebra for the continual-learning rules: thin SVD, thin QR, orthonormal bases and
 * projections onto two-sided subspaces.
 *
 * Every matrix is row-major float, like the rest of core/. The SVD and QR call LAPACK from OpenBLAS
 * (sgesdd_, sgeqrf_, sorgqr_), which is column-major: the wrappers hide that. A subspace pair (U, Vt)
 * describes the matrices U C Vt for any small core C: U (m,p) has orthonormal columns (a column space),
 * Vt (q,n) has orthonormal rows (a row space), the same layout as LoRA's B (out,r) and A (r,in).
 *
 * Sizes are bounded (LINALG_MAX_ELEMS per matrix); larger inputs fail with CLAD_ETOOLARGE, never abort.
 */
#ifndef CLAD_CORE_LINALG_H
#define CLAD_CORE_LINALG_H

#include <stddef.h>

#include "core/error.h"

#define LINALG_MAX_DIM 65536
#define LINALG_MAX_ELEMS (1L << 26)

/* Thin SVD A = U diag(S) Vt of A (m,n), k = min(m,n): U (m,k), S (k) in descending order, Vt (k,n).
 * A is not modified. U or Vt may be NULL when not wanted (S is always computed).
 * Errors: CLAD_EINVAL (bad sizes), CLAD_ETOOLARGE, CLAD_ENOMEM, CLAD_EINTERNAL (LAPACK did not converge). */
int linalg_svd(float *U, float *S, float *Vt, const float *A, int m, int n, clad_err *err);

/* Thin QR A = Q R of A (m,n) with m >= n: Q (m,n) with orthonormal columns, R (n,n) upper triangular
 * (R may be NULL). A is not modified. Errors as linalg_svd. */
int linalg_qr(float *Q, float *R, const float *A, int m, int n, clad_err *err);

/* Orthonormal basis of the column space of A (m,n): Q (m, min(m,n)) is filled with *k columns, the left
 * singular vectors whose singular value exceeds rtol * the largest (k = 0 for a zero matrix). The basis is
 * written with row stride *k (a compact (m,*k) matrix). Errors as linalg_svd. */
int linalg_orth(float *Q, int *k, const float *A, int m, int n, float rtol, clad_err *err);

/* Sum of squares of n floats, accumulated in double. */
double linalg_frob2(const float *A, size_t n);

/* C (p,q) = U^T X Vt^T: the coordinates of X (m,n) in the subspace pair; p or q may be 0. */
void linalg_core(float *C, const float *X, int m, int n, const float *U, int p, const float *Vt, int q);

/* Energy of X (m,n) inside the subspace pair: ||U^T X Vt^T||_F^2 = ||P_U X P_V||_F^2 (0 if p or q is 0). */
double linalg_inside_energy(const float *X, int m, int n, const float *U, int p, const float *Vt, int q);

/* out (m,n) = X - U U^T X Vt^T Vt: the part of X outside the subspace pair. out may equal X. */
void linalg_project_out(float *out, const float *X, int m, int n, const float *U, int p, const float *Vt, int q);

/* Number of leading values of s (k, descending, non-negative) whose squares hold at least the fraction tau of
 * the total sum of squares; 0 when the total is 0. */
int linalg_energy_rank(const float *s, int k, double tau);

#endif
