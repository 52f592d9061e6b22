/* Which sources a fusion adapter leans on: its fusion weights averaged over a data set; see fusion.h.
 * Apart from fusion.c because it runs the model (the run passes call fusion.c's kernels). */
#include "core/fusion.h"

#include <stdlib.h>

#include "core/adapter_priv.h"
#include "core/train.h"

int fusion_mean_weights(const model *m, const adapter *a, const dataset *d, int batch, double *mean,
                        double *per_site, clad_err *err)
{
    if (!a->ops->fuses_sources) return clad_err_set(err, CLAD_EINVAL, "fusion weights: not a fusion adapter");
    int rc = train_check_data(m, a, d, false, err);
    if (rc) return rc;
    int S = a->fusion.n_sources, sites = a->fusion.n_sites;
    int B = batch < 1 ? 256 : batch;
    if (B > d->n) B = d->n;
    model_ws *ws = model_ws_create_for(m, a, B, false, err);
    if (!ws) return err ? err->code : CLAD_ENOMEM;
    double *acc = calloc((size_t)sites * (size_t)S, sizeof *acc);
    if (!acc) abort();
    long rows_total = 0;
    for (int s0 = 0; s0 < d->n; s0 += B) {
        int n = d->n - s0 < B ? d->n - s0 : B;
        model_forward(ws, m, a, d->x + (size_t)s0 * d->dim, NULL, n);
        int rows = 0;
        for (int site = 0; site < sites; site++) {
            const float *w = model_ws_fusion_weights(ws, site, &rows);
            for (int t = 0; t < rows; t++)
                for (int k = 0; k < S; k++) acc[(size_t)site * S + k] += (double)w[(size_t)t * S + k];
        }
        rows_total += rows;
    }
    for (int k = 0; k < S; k++) mean[k] = 0.0;
    for (int site = 0; site < sites; site++)
        for (int k = 0; k < S; k++) {
            double v = acc[(size_t)site * S + k] / (double)rows_total;
            if (per_site) per_site[(size_t)site * S + k] = v;
            mean[k] += v / sites;
        }
    free(acc);
    model_ws_destroy(ws);
    return 0;
}
