/* Run-time choice of CPU-specific code for the engine's elementwise kernels.
 *
 * SIMD_CLONES before a function makes GCC compile it three times, for AVX-512 (x86-64-v4), for AVX2
 * (x86-64-v3) and for the portable baseline, and pick one when the program loads (an ifunc), by what
 * the CPU supports. The kernels are written with 16-lane vector types, which the AVX-512 clone runs in
 * one register, the AVX2 clone in two and the baseline in four.
 *
 * Every clone performs the same IEEE operations in the same order (the build never contracts a * b + c
 * into a fused multiply-add: -std=c11 turns that off), so all three give bit-identical results: a model
 * predicts the same bits on every machine of a fleet, whatever its CPU.
 */
#ifndef CLAD_CORE_SIMD_H
#define CLAD_CORE_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

#endif
