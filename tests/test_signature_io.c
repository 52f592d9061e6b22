/* Signatures stored beside adapters in version blobs: round trip, and adapters still load from them. */
#include "tests/test.h"

#include "core/rng.h"
#include "core/signature.h"
#include "io/model_io.h"
#include "io/signature_io.h"

TEST(sigio_blob_round_trip_keeps_adapter_and_signature)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = 12, .n_hidden = 2, .hidden = {10, 8}, .n_classes = 3};
    model *m = model_create(&c, NULL);
    model_init_random(m, 1);
    int ranks[MODEL_MAX_LINEARS] = {3, 2, 0};
    adapter *a = adapter_create(m, ranks, 4.0f, 3, NULL);
    adapter_init(a, m, 2);
    rng r;
    rng_init(&r, 3);
    for (int li = 0; li < 2; li++) {
        float *B = param_set_ptr(&a->params, a->B[li]);
        for (size_t i = 0; i < a->params.t[a->B[li]].numel; i++) B[i] = rng_normal(&r);
    }
    signature sig;
    clad_err e = {0};
    CHECK_MSG(signature_compute(&sig, m, a, SIGNATURE_KEEP, &e) == 0, "%s", e.msg);
    /* Pull components with gains, as the planner stores them. */
    sig_layer *L = &sig.layer[0];
    L->kp = 2;
    L->Up = calloc((size_t)L->out * 2, sizeof(float));
    L->Vtp = calloc((size_t)L->in * 2, sizeof(float));
    L->gp = malloc(2 * sizeof(float));
    L->Up[0] = L->Up[L->out * 1 + 1] = 1.0f; /* not orthonormal-checked here: only stored and read back */
    L->Vtp[0] = L->Vtp[L->in + 1] = 1.0f;
    L->gp[0] = 0.5f;
    L->gp[1] = 0.25f;
    uint8_t *blob = NULL;
    size_t len = 0;
    CHECK_INT_EQ(adapter_blob_build(a, m, &sig, &blob, &len, &e), 0);

    signature back;
    CHECK_MSG(signature_from_blob(&back, m, blob, len, &e) == 0, "%s", e.msg);
    for (int li = 0; li < m->n_linear; li++) {
        const sig_layer *x = &sig.layer[li], *y = &back.layer[li];
        CHECK_INT_EQ(y->k, x->k);
        CHECK_INT_EQ(y->kp, x->kp);
        CHECK_NEAR(y->energy, x->energy, 1e-9 * (1 + x->energy));
        if (x->k) {
            CHECK_ARRAY_NEAR(y->U, x->U, (size_t)x->out * x->k, 0, 0);
            CHECK_ARRAY_NEAR(y->Vt, x->Vt, (size_t)x->k * x->in, 0, 0);
            CHECK_ARRAY_NEAR(y->s, x->s, (size_t)x->k, 0, 0);
        }
        if (x->kp) {
            CHECK_ARRAY_NEAR(y->Up, x->Up, (size_t)x->out * x->kp, 0, 0);
            CHECK_ARRAY_NEAR(y->gp, x->gp, (size_t)x->kp, 0, 0);
        }
    }
    CHECK_INT_EQ(sig.layer[0].k, 3);
    CHECK_INT_EQ(sig.layer[2].k, 0);

    /* The same blob loads as the adapter, bit for bit. */
    adapter *a2 = adapter_from_buffer(m, blob, len, &e);
    CHECK_MSG(a2 != NULL, "%s", e.msg);
    CHECK(memcmp(a2->params.data, a->params.data, a->params.total * sizeof(float)) == 0);

    /* A plain adapter file carries no signature: not_found, not a crash. */
    uint8_t *plain = NULL;
    size_t plen = 0;
    CHECK_INT_EQ(adapter_to_buffer(a, m, &plain, &plen, NULL), 0);
    clad_err_clear(&e);
    signature_finish(&back);
    CHECK_INT_EQ(signature_from_blob(&back, m, plain, plen, &e), CLAD_ENOTFOUND);

    signature_finish(&sig);
    adapter_destroy(a);
    adapter_destroy(a2);
    model_destroy(m);
    free(blob);
    free(plain);
}
