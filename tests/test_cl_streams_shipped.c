/* The shipped benchmark streams (every .json file in bench/streams) parse, and the long related stream is what
 * docs/BENCHMARKS.md says it is: 20 rotations of Fashion-MNIST between 0 and 180 degrees, each angle once,
 * in a shuffled (not sorted) order. Parsing only: no data is loaded. */
#include "tests/test.h"

#include <dirent.h>

#include "bench/stream.h"

TEST(cl_streams_shipped_files_parse)
{
    DIR *d = opendir("bench/streams");
    if (!d) test_skip("bench/streams is not in the working directory");
    static stream s;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        char path[600];
        snprintf(path, sizeof path, "bench/streams/%s", e->d_name);
        clad_err err = {0};
        int rc = stream_load(&s, path, &err);
        CHECK_MSG(rc == 0, "%s: %s", path, err.msg);
        CHECK(s.n_tasks >= 1);
        n++;
    }
    closedir(d);
    CHECK(n >= 8);
}

TEST(cl_streams_rotations_cover_0_to_180_shuffled)
{
    static stream s;
    clad_err err = {0};
    if (stream_load(&s, "bench/streams/fmnist-rotations.json", &err)) test_skip("%s", err.msg);
    CHECK_INT_EQ(s.n_tasks, 20);
    bool seen[20] = {false};
    int descents = 0;
    for (int i = 0; i < s.n_tasks; i++) {
        CHECK_INT_EQ(s.tasks[i].n_transforms, 1);
        CHECK_INT_EQ(s.tasks[i].transforms[0].op, TRANSFORM_ROTATE);
        double deg = s.tasks[i].transforms[0].degrees;
        int k = (int)lround(deg * 19.0 / 180.0);
        CHECK_MSG(k >= 0 && k < 20 && fabs(deg - 180.0 * k / 19.0) < 0.06, "angle %g is not on the grid", deg);
        CHECK_MSG(!seen[k], "angle %g twice", deg);
        seen[k] = true;
        if (i && deg < s.tasks[i - 1].transforms[0].degrees) descents++;
    }
    CHECK_MSG(descents >= 5, "only %d descents: the order is close to sorted", descents);
}

TEST(cl_streams_mnist_domains_use_mnist)
{
    static stream s;
    clad_err err = {0};
    if (stream_load(&s, "bench/streams/mnist-domains.json", &err)) test_skip("%s", err.msg);
    CHECK(s.pretrain && s.pretrain_data == STREAM_MNIST);
    for (int i = 0; i < s.n_tasks; i++) CHECK_INT_EQ(s.tasks[i].data, STREAM_MNIST);
}
