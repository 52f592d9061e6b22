/* Placeholder until the registry lands: reports that the store benchmark is not built yet. */
#include <stdio.h>

#include "bench/bench.h"

int bench_store_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "clad-bench store: not available in this build\n");
    return 2;
}
