/* clad-bench subcommands. Each takes its own argv (argv[0] is the subcommand) and prints one JSON
 * object on stdout when given --json. Returns a process exit code. */
#ifndef CLAD_BENCH_BENCH_H
#define CLAD_BENCH_BENCH_H

int bench_speed_main(int argc, char **argv);
int bench_store_main(int argc, char **argv);
int bench_serve_main(int argc, char **argv);
int bench_cl_main(int argc, char **argv);
int bench_export_main(int argc, char **argv);
int bench_merge_main(int argc, char **argv);
int bench_fusion_main(int argc, char **argv);
int bench_tied_main(int argc, char **argv);
int bench_soak_main(int argc, char **argv);
int bench_nodes_main(int argc, char **argv);

#endif
