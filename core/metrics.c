/* Continual-learning metrics; see metrics.h. */
#include "core/metrics.h"

#include <math.h>
#include <stddef.h>

static cl_value val(double v) { return (cl_value){true, v, NULL}; }
static cl_value undef(const char *why) { return (cl_value){false, 0.0, why}; }

void cl_metrics_compute(cl_metrics *m, const double *R, int T, const double *base)
{
    if (T < 1 || !R) {
        cl_value u = undef("no task was learned");
        *m = (cl_metrics){u, u, u, u, u, u};
        return;
    }
    for (int i = 0; i < T; i++)
        for (int j = 0; j <= i; j++)
            if (!isfinite(R[(size_t)i * T + j])) {
                cl_value u = undef("the accuracy matrix has a missing entry");
                *m = (cl_metrics){u, u, u, u, u, u};
                return;
            }
#define AT(i, j) R[(size_t)(i) * T + (j)]
    double s = 0.0;
    for (int j = 0; j < T; j++) s += AT(T - 1, j);
    m->acc = val(s / T);

    s = 0.0;
    for (int i = 0; i < T; i++) {
        double row = 0.0;
        for (int j = 0; j <= i; j++) row += AT(i, j);
        s += row / (i + 1);
    }
    m->aia = val(s / T);

    if (T < 2) {
        const char *why = "needs at least two tasks: nothing was learned after the first";
        m->forgetting_max = m->forgetting_first = m->bwt = undef(why);
    } else {
        double fmax = 0.0, ffirst = 0.0;
        for (int j = 0; j < T - 1; j++) {
            double best = AT(j, j);
            for (int l = j + 1; l < T - 1; l++)
                if (AT(l, j) > best) best = AT(l, j);
            fmax += best - AT(T - 1, j);
            ffirst += AT(j, j) - AT(T - 1, j);
        }
        m->forgetting_max = val(fmax / (T - 1));
        m->forgetting_first = val(ffirst / (T - 1));
        m->bwt = val(-ffirst / (T - 1));
    }

    if (T < 2) {
        m->fwt = undef("needs at least two tasks: the first task has no predecessor to transfer from");
    } else if (!base) {
        m->fwt = undef("the base's linear-probe accuracies were not measured");
    } else {
        double f = 0.0;
        for (int j = 1; j < T; j++) {
            if (!isfinite(base[j])) {
                m->fwt = undef("a base linear-probe accuracy is missing");
                return;
            }
            f += AT(j, j) - base[j];
        }
        m->fwt = val(f / (T - 1));
    }
#undef AT
}
