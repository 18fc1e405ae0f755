/*
 * fuzz_route.c - fuzz target for the mapping table's decoder and the split (engine/route/map.c),
 * and for the acceptor's state of a table change (coh_map_accept_decode): arbitrary bytes, and the
 * same bytes with a valid checksum patched in (so that the record checks and coh_map_check are
 * reached too). Built with libFuzzer under COHORT_FUZZ (fuzz_route), and
 * always with fuzz_driver.c, the bounded random driver ctest runs (fuzz_route_driver).
 * Properties: nothing crashes or hangs; a table that decodes passes coh_map_check, encodes to the
 * same bytes, and splits every volume's ranges into components that cover the range exactly once;
 * an acceptor's state that decodes encodes to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>

#include "cohort/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_route_fail(void)
{
	abort();
}

/* fuzz_route_crc - patch the header's checksum over @len bytes as the encoder computes it. */
static void fuzz_route_crc(uint8_t *p, size_t len)
{
	uint32_t total, crc;

	if (len < 64)
		return;
	total =
	    (uint32_t)p[12] | (uint32_t)p[13] << 8 | (uint32_t)p[14] << 16 | (uint32_t)p[15] << 24;
	if (total < 64 || total > len)
		total = (uint32_t)len;
	memset(p + 60, 0, 4);
	crc = crc32_iscsi(p, (int)total, 0);
	p[60] = (uint8_t)crc;
	p[61] = (uint8_t)(crc >> 8);
	p[62] = (uint8_t)(crc >> 16);
	p[63] = (uint8_t)(crc >> 24);
}

/* fuzz_route_split - split a few ranges of each volume and check coverage. */
static void fuzz_route_split(const struct coh_map *m, const uint8_t *data, size_t size)
{
	static struct coh_map_comp comps[COH_MAP_MAX_COMPONENTS];
	static struct coh_map_piece pieces[64];
	static uint8_t seen[256];
	uint32_t v, i, c, p, nc, np, n;
	uint64_t lba;

	for (v = 0; v < m->nvolumes; v++) {
		for (i = 0; i < 4; i++) {
			uint8_t k = size ? data[(v * 4 + i) % size] : 0;
			struct coh_map_result res[COH_MAP_MAX_COMPONENTS];
			struct coh_map_status st;

			lba = (m->volumes[v].blocks * k) / 256;
			n = 1 + k % 200;
			if (lba + n > m->volumes[v].blocks)
				n = (uint32_t)(m->volumes[v].blocks - lba);
			if (!n || coh_map_split_pieces(m, v, n) > 64)
				continue;
			if (coh_map_split(m, v, lba, n, comps, COH_MAP_MAX_COMPONENTS, &nc, pieces,
					  64, &np))
				fuzz_route_fail();
			memset(seen, 0, n);
			for (c = 0; c < nc; c++) {
				uint32_t sum = 0;

				for (p = 0; p < comps[c].npieces; p++) {
					const struct coh_map_piece *pc =
					    &pieces[comps[c].first_piece + p];

					if (pc->host_block + pc->nblocks > n)
						fuzz_route_fail();
					for (uint32_t b = 0; b < pc->nblocks; b++)
						seen[pc->host_block + b]++;
					sum += pc->nblocks;
				}
				if (sum != comps[c].nblocks)
					fuzz_route_fail();
				res[c].status = (k >> (c % 8)) & 1 ? -5 : 0;
				res[c].done = k;
			}
			for (p = 0; p < n; p++)
				if (seen[p] != 1)
					fuzz_route_fail();
			coh_map_aggregate(comps, pieces, nc, n, res, &st);
			if (st.good > n || (st.status && st.fail_block >= n))
				fuzz_route_fail();
		}
	}
}

/* fuzz_route_base - a valid table's encoding (two groups, four logical volumes, a stripe over
 * two of them and a concatenation of the other two: a logical volume is in one virtual volume
 * at most) into @buf; its length. */
static size_t fuzz_route_base(uint8_t *buf, size_t len)
{
	struct coh_map m;
	size_t used = 0;
	uint32_t i;

	memset(&m, 0, sizeof(m));
	m.version = 7;
	m.nodes = 3;
	m.block_size = 4096;
	m.ngroups = 2;
	m.nvolumes = 6;
	for (i = 0; i < 2; i++) {
		m.groups[i].name[0] = (char)('a' + i);
		m.groups[i].amfs = 3u << i;
		m.groups[i].preferred = i;
		m.groups[i].blocks = 4096;
	}
	for (i = 0; i < 4; i++) {
		m.volumes[i].name[0] = (char)('p' + i);
		m.volumes[i].id[0] = (uint8_t)(i + 1);
		m.volumes[i].kind = COH_MAP_LOGICAL;
		m.volumes[i].group = i % 2;
		m.volumes[i].first_block = 64 * (i % 2) + 2048 * (i / 2);
		m.volumes[i].blocks = 1024;
	}
	for (i = 4; i < 6; i++) {
		m.volumes[i].name[0] = (char)('p' + i);
		m.volumes[i].id[0] = (uint8_t)(i + 1);
		m.volumes[i].kind = COH_MAP_VIRTUAL;
		m.volumes[i].blocks = 2048;
		m.volumes[i].layout = i == 4 ? COH_MAP_STRIPE : COH_MAP_CONCAT;
		m.volumes[i].stripe_blocks = i == 4 ? 16 : 0;
		m.volumes[i].ncomp = 2;
		m.volumes[i].comp[0] = i == 4 ? 1 : 3;
		m.volumes[i].comp[1] = i == 4 ? 0 : 2;
	}
	if (coh_map_encode(&m, buf, len, &used))
		fuzz_route_fail();
	return used;
}

/* fuzz_route_splice - up to two (offset, value) pairs of @data into @len bytes at @buf. */
static void fuzz_route_splice(uint8_t *buf, size_t len, const uint8_t *data, size_t size)
{
	size_t i;

	for (i = 0; i + 1 < size && i < 4; i += 2)
		buf[data[i] * 7u % len] = data[i + 1];
}

/* fuzz_route_accept_crc - patch an acceptor state's checksum (map.c: crc32c at 36 of the header
 * with it zero and the table that follows, whose length is at 32). */
static void fuzz_route_accept_crc(uint8_t *p, size_t len)
{
	static const uint8_t zero[4];
	uint32_t tlen, crc;

	if (len < 64)
		return;
	tlen =
	    (uint32_t)p[32] | (uint32_t)p[33] << 8 | (uint32_t)p[34] << 16 | (uint32_t)p[35] << 24;
	if (tlen > len - 64)
		tlen = (uint32_t)(len - 64);
	crc = crc32_iscsi(p, 36, 0);
	crc = crc32_iscsi((unsigned char *)zero, 4, crc);
	crc = crc32_iscsi(p + 40, (int)(24 + tlen), crc);
	p[36] = (uint8_t)crc;
	p[37] = (uint8_t)(crc >> 8);
	p[38] = (uint8_t)(crc >> 16);
	p[39] = (uint8_t)(crc >> 24);
}

/* fuzz_route_accept - the acceptor's state: the bytes as they are, with their checksum patched,
 * and a valid state (with the base table accepted) with up to two bytes spliced in. */
static void fuzz_route_accept(const uint8_t *data, size_t size)
{
	static uint8_t copy[COH_MAP_ACCEPT_ENCODED_MAX], again[COH_MAP_ACCEPT_ENCODED_MAX];
	static struct coh_map_accept a;
	char err[160];
	size_t len, used;
	int pass;

	for (pass = 0; pass < 3; pass++) {
		len = size < sizeof(copy) ? size : sizeof(copy);
		if (pass < 2) {
			memcpy(copy, data, len);
		} else {
			memset(&a, 0, sizeof(a));
			if (coh_map_decode(again, fuzz_route_base(again, sizeof(again)), &a.map,
					   NULL, 0))
				fuzz_route_fail();
			a.version = a.map.version;
			a.promised = 0x301;
			a.ballot = 0x201;
			if (coh_map_accept_encode(&a, copy, sizeof(copy), &len))
				fuzz_route_fail();
			fuzz_route_splice(copy, len, data, size);
		}
		if (pass)
			fuzz_route_accept_crc(copy, len);
		if (coh_map_accept_decode(copy, len, &a, err, sizeof(err)))
			continue;
		if (coh_map_accept_encode(&a, again, sizeof(again), &used) || used > len ||
		    memcmp(again, copy, used))
			fuzz_route_fail();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t copy[COH_MAP_ENCODED_MAX], again[COH_MAP_ENCODED_MAX];
	struct coh_map m;
	char err[160];
	size_t len, used;
	int pass;

	/* Pass 0: the bytes as they are; 1: with their checksum patched in; 2: spliced into a
	 * valid table as up to two (offset, value) pairs, checksum patched. */
	for (pass = 0; pass < 3; pass++) {
		len = size < sizeof(copy) ? size : sizeof(copy);
		if (pass < 2) {
			memcpy(copy, data, len);
		} else {
			len = fuzz_route_base(copy, sizeof(copy));
			fuzz_route_splice(copy, len, data, size);
		}
		if (pass)
			fuzz_route_crc(copy, len);
		if (coh_map_decode(copy, len, &m, err, sizeof(err)))
			continue;
		if (coh_map_check(&m, NULL, 0) || coh_map_encode(&m, again, sizeof(again), &used) ||
		    used > len || memcmp(again, copy, used))
			fuzz_route_fail();
		fuzz_route_split(&m, data, size);
	}
	fuzz_route_accept(data, size);
	return 0;
}
