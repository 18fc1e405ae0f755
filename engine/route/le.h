/*
 * le.h - little-endian fields of the routing module's on-disk and wire forms (the mapping table,
 * map.c; the forwarder's messages, forward.c), and the check that reserved bytes are zero.
 * Engine tier, engine/route/ only (engine/scsi/be.h is its big-endian sibling).
 */
#ifndef COHORT_ROUTE_LE_H
#define COHORT_ROUTE_LE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline uint32_t le_get16(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static inline uint32_t le_get32(const uint8_t *p)
{
	return le_get16(p) | le_get16(p + 2) << 16;
}

static inline uint64_t le_get64(const uint8_t *p)
{
	return (uint64_t)le_get32(p) | (uint64_t)le_get32(p + 4) << 32;
}

static inline void le_put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void le_put32(uint8_t *p, uint32_t v)
{
	le_put16(p, v);
	le_put16(p + 2, v >> 16);
}

static inline void le_put64(uint8_t *p, uint64_t v)
{
	le_put32(p, (uint32_t)v);
	le_put32(p + 4, (uint32_t)(v >> 32));
}

/* le_zero - whether @len bytes at @p are all zero (reserved bytes, an empty slot). */
static inline bool le_zero(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len && !p[i]; i++)
		;
	return i == len;
}

#endif /* COHORT_ROUTE_LE_H */
