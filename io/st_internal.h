/* Helpers shared by the safetensors files (safetensors.c, st_reader.c, st_writer.c); not a public API. */
#ifndef CLAD_IO_ST_INTERNAL_H
#define CLAD_IO_ST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Little-endian loads and stores from unaligned bytes; compilers turn these into single moves. */
static inline uint16_t st_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t st_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t st_load_u64(const uint8_t *p)
{
    return (uint64_t)st_load_u32(p) | (uint64_t)st_load_u32(p + 4) << 32;
}

static inline void st_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void st_store_u64(uint8_t *p, uint64_t v)
{
    st_store_u32(p, (uint32_t)v);
    st_store_u32(p + 4, (uint32_t)(v >> 32));
}

/* "[2,3]" into buf (truncated to size). */
void st_shape_format(char *buf, size_t size, int ndim, const int64_t *shape);

#endif
