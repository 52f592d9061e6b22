/* Placeholder until the core engine lands. */
#include <stdio.h>

#include "bench/bench.h"

int bench_speed_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "clad-bench speed: not available in this build\n");
    return 2;
}
