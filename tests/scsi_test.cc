// scsi_test.cc - the SCSI logical unit (engine/scsi/lu.c) against the SBC-3/SPC-4 tables, on a
// mock block path in memory (tests/scsi_shim.c) that completes inline or on its own thread.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <algorithm>
#include <thread>
#include <vector>

#include "cohort/scsi.h"
#include "scsi_shim.h"

namespace
{
constexpr uint32_t kBs = 512;
constexpr uint64_t kBlocks = 4096;

struct Unit : ::testing::TestWithParam<int> {
	void SetUp() override
	{
		ASSERT_EQ(0, sm_open(kBs, kBlocks, 8, GetParam()));
	}
	void TearDown() override
	{
		sm_close();
	}

	sm_result run(std::vector<uint8_t> cdb, std::vector<uint8_t> &buf, uint32_t pieces = 1)
	{
		sm_result r{};
		EXPECT_EQ(0, sm_run(cdb.data(), (uint32_t)cdb.size(), buf.data(),
				    (uint32_t)buf.size(), pieces, &r));
		EXPECT_EQ(1u, r.calls) << "the done callback runs exactly once";
		return r;
	}
	sm_result run(std::vector<uint8_t> cdb)
	{
		std::vector<uint8_t> none;
		return run(cdb, none);
	}
};

void expect_sense(const sm_result &r, uint8_t key, uint8_t asc, uint8_t ascq)
{
	EXPECT_EQ(COH_SCSI_CHECK_CONDITION, r.status);
	EXPECT_EQ(18u, r.sense_len);
	EXPECT_EQ(key, r.key);
	EXPECT_EQ(asc, r.asc);
	EXPECT_EQ(ascq, r.ascq);
}

std::vector<uint8_t> rw16(uint8_t op, uint64_t lba, uint32_t n)
{
	std::vector<uint8_t> c(16, 0);
	c[0] = op;
	for (int i = 0; i < 8; i++)
		c[2 + i] = (uint8_t)(lba >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		c[10 + i] = (uint8_t)(n >> (24 - 8 * i));
	return c;
}

std::vector<uint8_t> pattern(size_t len, uint8_t seed)
{
	std::vector<uint8_t> b(len);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seed + i * 7 + i / 512);
	return b;
}
} // namespace

TEST_P(Unit, inquiry_standard_and_truncated)
{
	std::vector<uint8_t> b(96, 0xee);
	auto r = run({ 0x12, 0, 0, 0, 96, 0 }, b);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(66u, r.data_len);
	EXPECT_EQ(0x00, b[0]);	      // direct access block device
	EXPECT_EQ(0x06, b[2]);	      // SPC-4
	EXPECT_EQ(0x10, b[5] & 0x30); // TPGS 01b: implicit ALUA
	EXPECT_EQ(0x02, b[7] & 0x02); // CMDQUE
	EXPECT_EQ(0, memcmp(&b[8], "COHORT  ", 8));
	std::vector<uint8_t> s(5, 0xee);
	r = run({ 0x12, 0, 0, 0, 5, 0 }, s);
	EXPECT_EQ(5u, r.data_len); // the allocation length truncates
	expect_sense(run({ 0x12, 0, 0x80, 0, 96, 0 }, b), 0x5, 0x24, 0x00); // page without EVPD
	expect_sense(run({ 0x12, 1, 0x42, 0, 96, 0 }, b), 0x5, 0x24, 0x00); // unknown page
}

TEST_P(Unit, vpd_pages_identity_and_limits)
{
	std::vector<uint8_t> b(255, 0);
	auto r = run({ 0x12, 1, 0x00, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(6, b[3]);
	EXPECT_EQ(0x83, b[6]);
	EXPECT_EQ(0xb2, b[9]);

	r = run({ 0x12, 1, 0x80, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(32, b[3]);
	EXPECT_EQ(0, memcmp(&b[4], "c040770000000000000000000000abcd", 32));

	r = run({ 0x12, 1, 0x83, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	// First designator: NAA, binary, LU association, 16 bytes: 6, 001405, then the serial.
	EXPECT_EQ(0x01, b[4]);
	EXPECT_EQ(0x03, b[5]);
	EXPECT_EQ(16, b[7]);
	EXPECT_EQ(0x60, b[8]);
	EXPECT_EQ(0x01, b[9]);
	EXPECT_EQ(0x40, b[10]);
	EXPECT_EQ(0x5c, b[11]); // company id's last nibble 5, then the serial's first digit c
	EXPECT_EQ(0x04, b[12]);

	r = run({ 0x12, 1, 0xb0, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0x3c, b[3]);
	EXPECT_EQ(8, b[5]); // MAXIMUM COMPARE AND WRITE LENGTH, capped by the piece size
	EXPECT_EQ(8u, (uint32_t)b[8] << 24 | b[9] << 16 | b[10] << 8 | b[11]); // max transfer

	r = run({ 0x12, 1, 0xb2, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0x04, b[5] & 0x04); // LBPRZ
}

TEST_P(Unit, read_capacity_10_and_16)
{
	std::vector<uint8_t> b(32, 0);
	auto r = run({ 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(8u, r.data_len);
	EXPECT_EQ(kBlocks - 1, (uint64_t)b[2] << 8 | b[3]);
	EXPECT_EQ(kBs, (uint32_t)b[6] << 8 | b[7]);
	std::vector<uint8_t> c(16, 0);
	c[0] = 0x9e, c[1] = 0x10, c[13] = 32;
	r = run(c, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(32u, r.data_len);
	EXPECT_EQ(kBlocks - 1, (uint64_t)b[6] << 8 | b[7]);
	EXPECT_EQ(0xc0, b[14] & 0xc0); // LBPME, LBPRZ
	c[1] = 0x11;
	expect_sense(run(c, b), 0x5, 0x24, 0x00);
}

TEST_P(Unit, write_then_read_every_size_split_into_pieces)
{
	for (uint8_t op : { 0x2a, 0xaa, 0x8a, 0x0a }) {
		auto data = pattern(20 * kBs, op);
		std::vector<uint8_t> c;
		if (op == 0x0a)
			c = { 0x0a, 0, 0, 100, 20, 0 };
		else if (op == 0x2a)
			c = { 0x2a, 0, 0, 0, 0, 100, 0, 0, 20, 0 };
		else if (op == 0xaa)
			c = { 0xaa, 0, 0, 0, 0, 100, 0, 0, 0, 20, 0, 0 };
		else
			c = rw16(0x8a, 100, 20);
		uint64_t before = sm_submits();
		auto r = run(c, data, 3);
		ASSERT_EQ(COH_SCSI_GOOD, r.status) << (int)op;
		EXPECT_EQ(3u, sm_submits() - before) << "20 blocks in pieces of 8";
		EXPECT_EQ(0, memcmp(sm_mem() + 100 * kBs, data.data(), data.size()));
		std::vector<uint8_t> back(20 * kBs, 0);
		c[0] = op & ~0x02; // the READ of the same size
		r = run(c, back, 4);
		ASSERT_EQ(COH_SCSI_GOOD, r.status);
		EXPECT_EQ(back.size(), r.data_len);
		EXPECT_EQ(back, data);
	}
}

TEST_P(Unit, read6_length_0_means_256_and_10_means_none)
{
	std::vector<uint8_t> b(256 * kBs, 0);
	auto r = run({ 0x08, 0, 0, 0, 0, 0 }, b);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(256 * kBs, r.data_len);
	uint64_t before = sm_submits();
	r = run({ 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, b);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0u, r.data_len);
	EXPECT_EQ(before, sm_submits());
}

TEST_P(Unit, bad_cdbs_get_illegal_request)
{
	std::vector<uint8_t> b(8 * kBs, 0);
	expect_sense(run(rw16(0x88, kBlocks - 1, 2), b), 0x5, 0x21, 0x00); // past the end
	expect_sense(run(rw16(0x88, ~0ull - 1, 4), b), 0x5, 0x21, 0x00);   // wraps
	expect_sense(run(rw16(0x8a, 0, 9), b), 0x5, 0x24, 0x00);	   // longer than the buffer
	expect_sense(run({ 0x28, 0, 0, 0 }), 0x5, 0x24, 0x00);		   // short CDB
	expect_sense(run({ 0xc1, 0, 0, 0, 0, 0 }), 0x5, 0x20, 0x00);	   // vendor specific
	expect_sense(run({ 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0 }), 0x5, 0x20, 0x00); // variable
	expect_sense(run({ 0x4d, 0, 0, 0, 0, 0, 0, 0, 0, 0 }), 0x5, 0x20, 0x00); // LOG SENSE
	expect_sense(run({ 0x00, 0, 0, 0, 0, 0x04 }), 0x5, 0x24, 0x00);		 // NACA
	expect_sense(run({ 0xa3, 0x05, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0 }), 0x5, 0x24, 0x00);
	expect_sense(run({}), 0x5, 0x24, 0x00); // no CDB at all
}

TEST_P(Unit, compare_and_write_succeeds_then_miscompares_with_offset)
{
	auto old = pattern(2 * kBs, 1), neu = pattern(2 * kBs, 9);
	memcpy(sm_mem() + 40 * kBs, old.data(), old.size());
	std::vector<uint8_t> c(16, 0);
	c[0] = 0x89;
	c[9] = 40;
	c[13] = 2;
	std::vector<uint8_t> buf(old);
	buf.insert(buf.end(), neu.begin(), neu.end());
	auto r = run(c, buf, 2);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0, memcmp(sm_mem() + 40 * kBs, neu.data(), neu.size()));
	// Stale compare data: MISCOMPARE, INFORMATION = the first differing byte's offset.
	r = run(c, buf, 1);
	expect_sense(r, 0xe, 0x1d, 0x00);
	EXPECT_TRUE(r.info_valid);
	EXPECT_EQ(0u, r.info);
	std::vector<uint8_t> near(neu);
	near[700] ^= 1;
	near.insert(near.end(), old.begin(), old.end());
	r = run(c, near, 1);
	expect_sense(r, 0xe, 0x1d, 0x00);
	EXPECT_EQ(700u, r.info);
	EXPECT_EQ(0, memcmp(sm_mem() + 40 * kBs, neu.data(), neu.size())) << "nothing written";
	c[13] = 17; // beyond MAXIMUM COMPARE AND WRITE LENGTH
	expect_sense(run(c, buf), 0x5, 0x24, 0x00);
}

TEST_P(Unit, write_same_unmap_and_verify)
{
	auto blk = pattern(kBs, 3);
	std::vector<uint8_t> c(16, 0);
	c[0] = 0x93;
	c[9] = 200;
	c[13] = 19; // 19 blocks: three pieces
	auto r = run(c, blk);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	for (int i = 0; i < 19; i++)
		EXPECT_EQ(0, memcmp(sm_mem() + (200 + i) * kBs, blk.data(), kBs)) << i;
	// UNMAP two extents: they read back zeros (LBPRZ).
	std::vector<uint8_t> p(8 + 32, 0);
	p[1] = 38, p[3] = 32;
	p[8 + 7] = 200, p[8 + 11] = 3;
	p[24 + 7] = 210, p[24 + 11] = 9;
	r = run({ 0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0 }, p);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	std::vector<uint8_t> zero(kBs, 0);
	for (int i = 0; i < 19; i++) {
		bool unmapped = i < 3 || (i >= 10 && i < 19);
		EXPECT_EQ(
		    0, memcmp(sm_mem() + (200 + i) * kBs, unmapped ? zero.data() : blk.data(), kBs))
		    << i;
	}
	// VERIFY(16) with BYTCHK: the same data is GOOD; one byte off is MISCOMPARE at its offset.
	std::vector<uint8_t> v(sm_mem() + 203 * kBs, sm_mem() + 210 * kBs);
	std::vector<uint8_t> vc = rw16(0x8f, 203, 7);
	vc[1] = 0x02;
	r = run(vc, v, 3);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	v[5 * kBs + 3] ^= 0x40;
	r = run(vc, v, 2);
	expect_sense(r, 0xe, 0x1d, 0x00);
	EXPECT_EQ(5 * kBs + 3, r.info);
	vc[1] = 0; // BYTCHK 0: readable is enough
	EXPECT_EQ(COH_SCSI_GOOD, run(vc).status);
	// WRITE SAME of 0 blocks is refused (WSNZ), and UNMAP past the end gets 21h.
	c[13] = 0;
	expect_sense(run(c, blk), 0x5, 0x24, 0x00);
	p[8 + 4] = 0x7f;
	expect_sense(run({ 0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0 }, p), 0x5, 0x21, 0x00);
	std::vector<uint8_t> shortp(6, 0);
	expect_sense(run({ 0x42, 0, 0, 0, 0, 0, 0, 0, 6, 0 }, shortp), 0x5, 0x1a, 0x00);
}

TEST_P(Unit, mode_sense_pages_and_mode_select_of_current_values)
{
	std::vector<uint8_t> b(255, 0);
	auto r = run({ 0x1a, 0, 0x3f, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(4u + 8 + 20 + 12, r.data_len);
	EXPECT_EQ(r.data_len - 1, b[0]);
	EXPECT_EQ(8, b[3]);					 // block descriptor
	EXPECT_EQ(0x08, b[12]);					 // caching page
	EXPECT_EQ(0, b[14] & 0x04);				 // WCE 0: no volatile cache
	EXPECT_EQ(0x0a, b[32]);					 // control page
	r = run({ 0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0 }, b); // DBD, caching page only
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(8u + 20, r.data_len);
	expect_sense(run({ 0x1a, 0, 0xc8, 0, 255, 0 }, b), 0x5, 0x39, 0x00); // saved values
	expect_sense(run({ 0x1a, 0, 0x1c, 0, 255, 0 }, b), 0x5, 0x24, 0x00); // unknown page
	// MODE SELECT(6) of the caching page as it is: GOOD; with WCE set: INVALID FIELD IN
	// PARAMETER LIST.
	std::vector<uint8_t> sel(4 + 20, 0);
	sel[4] = 0x08, sel[5] = 0x12;
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x15, 0x10, 0, 0, 24, 0 }, sel).status);
	sel[6] = 0x04;
	expect_sense(run({ 0x15, 0x10, 0, 0, 24, 0 }, sel), 0x5, 0x26, 0x00);
	expect_sense(run({ 0x15, 0x10, 0, 0, 2, 0 }, sel), 0x5, 0x1a, 0x00);
	// A block descriptor: the unit's block length, and 0 or the capacity, only.
	std::vector<uint8_t> bd(4 + 8 + 20, 0);
	bd[3] = 8;
	bd[4 + 6] = kBs >> 8;
	bd[12] = 0x08, bd[13] = 0x12;
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x15, 0x10, 0, 0, 32, 0 }, bd).status);
	bd[4 + 2] = kBlocks >> 8; // NUMBER OF LOGICAL BLOCKS = the capacity
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x15, 0x10, 0, 0, 32, 0 }, bd).status);
	bd[4 + 6] = 0x10; // 4096-byte blocks
	auto r2 = run({ 0x15, 0x10, 0, 0, 32, 0 }, bd);
	expect_sense(r2, 0x5, 0x26, 0x00);
	EXPECT_EQ(0x80, r2.sks[0] & 0xc0) << "SKSV, in the parameter list";
	EXPECT_EQ(4, r2.sks[1] << 8 | r2.sks[2]);
	bd[4 + 6] = kBs >> 8;
	bd[4 + 3] = 1; // a capacity change
	expect_sense(run({ 0x15, 0x10, 0, 0, 32, 0 }, bd), 0x5, 0x26, 0x00);
}

TEST_P(Unit, report_target_port_groups_every_group_active_optimized)
{
	sm_set_tpg(2, 2, 3);
	std::vector<uint8_t> b(128, 0);
	auto r = run({ 0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(4u + 3 * 12, r.data_len);
	for (int g = 0; g < 3; g++) {
		EXPECT_EQ(0x00, b[4 + 12 * g] & 0x0f) << "active/optimized";
		EXPECT_EQ(g + 1, b[4 + 12 * g + 3]);
	}
	sm_set_state(COH_SCSI_LU_UNAVAILABLE);
	r = run({ 0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0 }, b);
	EXPECT_EQ(0x03, b[4 + 12] & 0x0f) << "this node's group: unavailable";
	EXPECT_EQ(0x00, b[4] & 0x0f);
}

TEST_P(Unit, a_unit_not_active_refuses_media_commands_so_hosts_use_another_path)
{
	std::vector<uint8_t> b(kBs, 0);
	uint64_t before = sm_submits();
	sm_set_state(COH_SCSI_LU_UNAVAILABLE);
	expect_sense(run(rw16(0x88, 0, 1), b), 0x2, 0x04, 0x0c);
	expect_sense(run({ 0, 0, 0, 0, 0, 0 }), 0x2, 0x04, 0x0c);
	sm_set_state(COH_SCSI_LU_TRANSITIONING);
	expect_sense(run(rw16(0x8a, 0, 1), b), 0x2, 0x04, 0x0a);
	EXPECT_EQ(before, sm_submits()) << "nothing reached the block path";
	std::vector<uint8_t> s(18, 0);
	auto r = run({ 0x03, 0, 0, 0, 18, 0 }, s); // REQUEST SENSE says why, with GOOD
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0x2, s[2] & 0xf);
	sm_set_state(COH_SCSI_LU_ACTIVE);
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0, 0, 0, 0, 0, 0 }).status);
}

TEST_P(Unit, engine_errors_map_to_one_sense_each)
{
	std::vector<uint8_t> b(kBs, 0);
	sm_fail(-EBUSY, 1, true);
	EXPECT_EQ(COH_SCSI_TASK_SET_FULL, run(rw16(0x88, 0, 1), b).status);
	sm_fail(-EROFS, 1, false);
	expect_sense(run(rw16(0x8a, 0, 1), b), 0x2, 0x04, 0x0c);
	sm_fail(-ESHUTDOWN, 1, false);
	expect_sense(run(rw16(0x88, 0, 1), b), 0x2, 0x04, 0x0c);
	sm_fail(-EAGAIN, 1, false);
	expect_sense(run(rw16(0x88, 0, 1), b), 0x2, 0x04, 0x0a);
	sm_fail(-ETIMEDOUT, 1, false);
	expect_sense(run(rw16(0x8a, 0, 1), b), 0x2, 0x04, 0x0a);
	sm_fail(-ENXIO, 1, false); // a routed volume deleted online
	expect_sense(run(rw16(0x88, 0, 1), b), 0x5, 0x25, 0x00);
	sm_fail(-EIO, 1, false);
	expect_sense(run(rw16(0x88, 0, 1), b), 0x3, 0x11, 0x00);
	sm_fail(-EIO, 1, false);
	expect_sense(run(rw16(0x8a, 0, 1), b), 0x3, 0x0c, 0x00);
	sm_fail(-ENOMEM, 1, true);
	EXPECT_EQ(COH_SCSI_BUSY, run(rw16(0x88, 0, 1), b).status);
	// A failed piece of a long transfer ends the command with its error, once, and no piece
	// after it is submitted.
	std::vector<uint8_t> big(20 * kBs, 0);
	uint64_t before = sm_submits();
	sm_fail(-EIO, 1, false);
	expect_sense(run(rw16(0x88, 0, 20), big, 2), 0x3, 0x11, 0x00);
	EXPECT_EQ(before + 1, sm_submits());
}

TEST_P(Unit, sync_cache_and_test_unit_ready)
{
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0 }).status);
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0, 0, 0, 0, 0, 0 }).status);
	expect_sense(run(rw16(0x91, kBlocks, 1)), 0x5, 0x21, 0x00);
}

// Every opcode the unit knows, with a CDB one byte short of its length: ILLEGAL REQUEST, INVALID
// FIELD IN CDB, the field pointer at the last byte given. Unknown opcodes and service actions.
TEST_P(Unit, every_opcode_short_and_unknown_ones)
{
	struct {
		uint8_t op, len;
	} ops[] = { { 0x00, 6 },  { 0x03, 6 },	{ 0x08, 6 },  { 0x0a, 6 },  { 0x12, 6 },
		    { 0x15, 6 },  { 0x1a, 6 },	{ 0x25, 10 }, { 0x28, 10 }, { 0x2a, 10 },
		    { 0x2f, 10 }, { 0x35, 10 }, { 0x41, 10 }, { 0x42, 10 }, { 0x55, 10 },
		    { 0x5a, 10 }, { 0x88, 16 }, { 0x89, 16 }, { 0x8a, 16 }, { 0x8f, 16 },
		    { 0x91, 16 }, { 0x93, 16 }, { 0x9e, 16 }, { 0xa3, 12 }, { 0xa8, 12 },
		    { 0xaa, 12 } };
	std::vector<uint8_t> b(4 * kBs, 0);
	uint64_t before = sm_submits();
	for (auto &o : ops) {
		std::vector<uint8_t> c(o.len - 1, 0);
		c[0] = o.op;
		auto r = run(c, b);
		expect_sense(r, 0x5, 0x24, 0x00);
		EXPECT_EQ(0xc0, r.sks[0] & 0xc0) << "SKSV, C/D: op " << (int)o.op;
		EXPECT_EQ(o.len - 2, r.sks[1] << 8 | r.sks[2]) << "field: op " << (int)o.op;
	}
	EXPECT_EQ(before, sm_submits()) << "nothing reached the block path";
	for (uint8_t op : { 0x01, 0x04, 0x1b, 0x2b, 0x34, 0x3b, 0x4d, 0xa0, 0xa2, 0xc0, 0xff }) {
		std::vector<uint8_t> c(16, 0);
		c[0] = op;
		auto r = run(c, b);
		expect_sense(r, 0x5, 0x20, 0x00);
		EXPECT_EQ(0xc0, r.sks[0] & 0xc0) << (int)op;
	}
	std::vector<uint8_t> c(16, 0);
	c[0] = 0x9e, c[1] = 0x12, c[13] = 32; // SERVICE ACTION IN(16): GET LBA STATUS
	expect_sense(run(c, b), 0x5, 0x24, 0x00);
	std::vector<uint8_t> m{ 0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0 }; // REPORT SUPPORTED OPS
	expect_sense(run(m, b), 0x5, 0x24, 0x00);
	m[1] = 0x4a; // RTPG with parameter data format 010b
	expect_sense(run(m, b), 0x5, 0x24, 0x00);
}

// Reserved bits and the protection fields (the unit has no protection information): INVALID
// FIELD IN CDB with the byte and the bit.
TEST_P(Unit, reserved_and_protection_fields_are_refused_with_the_field_pointer)
{
	struct {
		std::vector<uint8_t> cdb;
		uint16_t field;
		uint8_t bit;
	} bad[] = {
		{ { 0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0 }, 1, 5 },	    // RDPROTECT 001b
		{ { 0x2a, 0xe0, 0, 0, 0, 0, 0, 0, 1, 0 }, 1, 7 },	    // WRPROTECT 111b
		{ { 0x00, 0, 0, 0, 0x01, 0 }, 4, 0 },			    // TUR, byte 4
		{ { 0x12, 0x02, 0, 0, 96, 0 }, 1, 1 },			    // INQUIRY CMDDT
		{ { 0x41, 0x10, 0, 0, 0, 0, 0, 0, 1, 0 }, 1, 4 },	    // WRITE SAME ANCHOR
		{ { 0x25, 0, 0, 0, 0, 0, 0, 0, 0x02, 0 }, 8, 1 },	    // READ CAPACITY
		{ { 0xa3, 0x0a, 0, 0, 0x80, 0, 0, 0, 0, 64, 0, 0 }, 4, 7 }, // RTPG byte 4
	};
	std::vector<uint8_t> b(4 * kBs, 0);
	for (auto &x : bad) {
		auto r = run(x.cdb, b);
		expect_sense(r, 0x5, 0x24, 0x00);
		EXPECT_EQ(0xc8 | x.bit, r.sks[0]) << "SKSV, C/D, BPV, bit: op " << (int)x.cdb[0];
		EXPECT_EQ(x.field, r.sks[1] << 8 | r.sks[2]) << (int)x.cdb[0];
	}
	std::vector<uint8_t> caw(16, 0);
	caw[0] = 0x89, caw[11] = 1, caw[13] = 1;
	auto r = run(caw, b);
	expect_sense(r, 0x5, 0x24, 0x00);
	EXPECT_EQ(11, r.sks[1] << 8 | r.sks[2]);
	// READ CAPACITY with PMI 0 and an LBA: the LBA field.
	r = run({ 0x25, 0, 0, 0, 0, 5, 0, 0, 0, 0 }, b);
	expect_sense(r, 0x5, 0x24, 0x00);
	EXPECT_EQ(2, r.sks[1] << 8 | r.sks[2]);
	// What a host sets and the unit takes: DPO and FUA on a write, IMMED on a sync.
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x2a, 0x18, 0, 0, 0, 0, 0, 0, 1, 0 }, b).status);
	EXPECT_EQ(COH_SCSI_GOOD, run({ 0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0 }).status);
}

TEST_P(Unit, vpd_0x83_designators_and_truncation)
{
	std::vector<uint8_t> b(255, 0);
	auto r = run({ 0x12, 1, 0x83, 0, 255, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	uint32_t len = (uint32_t)b[2] << 8 | b[3];
	EXPECT_EQ(len + 4, r.data_len);
	// The NAA: 6, IEEE company id 001405, then the serial's first 25 hex digits, one nibble
	// each (LIO's spc_gen_naa_6h_vendor_specific).
	std::string serial = "c040770000000000000000000000abcd";
	std::string hex = "6001405" + serial.substr(0, 25);
	std::vector<uint8_t> naa;
	for (size_t i = 0; i < hex.size(); i += 2)
		naa.push_back((uint8_t)std::stoi(hex.substr(i, 2), nullptr, 16));
	ASSERT_EQ(16u, naa.size());
	bool seen_naa = false, seen_t10 = false, seen_port = false, seen_group = false;
	for (uint32_t off = 4; off + 4 <= len + 4;) {
		uint8_t type = b[off + 1] & 0x0f, assoc = (b[off + 1] >> 4) & 3, dl = b[off + 3];
		ASSERT_LE(off + 4 + dl, len + 4);
		if (type == 3) {
			seen_naa = true;
			EXPECT_EQ(0, assoc) << "the NAA names the logical unit";
			EXPECT_EQ(1, b[off] & 0x0f) << "binary";
			ASSERT_EQ(16, dl);
			EXPECT_EQ(0, memcmp(&b[off + 4], naa.data(), 16));
		} else if (type == 1) {
			seen_t10 = true;
			EXPECT_EQ(2, b[off] & 0x0f) << "ASCII";
			ASSERT_EQ(40, dl);
			EXPECT_EQ(0, memcmp(&b[off + 4], "COHORT  ", 8));
			EXPECT_EQ(0, memcmp(&b[off + 12], serial.data(), 32));
		} else if (type == 4) {
			seen_port = true;
			EXPECT_EQ(1, assoc) << "target port";
			EXPECT_EQ(1, b[off + 6] << 8 | b[off + 7]); // rel_port_id
		} else if (type == 5) {
			seen_group = true;
			EXPECT_EQ(1, assoc);
			EXPECT_EQ(1, b[off + 6] << 8 | b[off + 7]); // tpg_id
		}
		off += 4 + dl;
	}
	EXPECT_TRUE(seen_naa && seen_t10 && seen_port && seen_group);
	// ALLOCATION LENGTH truncates; the PAGE LENGTH still says the whole page.
	std::vector<uint8_t> s(10, 0);
	r = run({ 0x12, 1, 0x83, 0, 10, 0 }, s);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(10u, r.data_len);
	EXPECT_EQ(len, (uint32_t)s[2] << 8 | s[3]);
	// A buffer smaller than the allocation length: as much as fits.
	std::vector<uint8_t> t(7, 0);
	r = run({ 0x12, 1, 0x80, 0, 255, 0 }, t, 3);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(7u, r.data_len);
	EXPECT_EQ(0, memcmp(&t[4], "c04", 3));
}

TEST_P(Unit, vpd_limits_and_provisioning_pages)
{
	std::vector<uint8_t> b(255, 0);
	auto be32 = [&](size_t o) {
		return (uint32_t)b[o] << 24 | (uint32_t)b[o + 1] << 16 | (uint32_t)b[o + 2] << 8 |
		       b[o + 3];
	};
	ASSERT_EQ(COH_SCSI_GOOD, run({ 0x12, 1, 0xb0, 0, 255, 0 }, b).status);
	EXPECT_EQ(0xb0, b[1]);
	EXPECT_EQ(1, b[4] & 1) << "WSNZ";
	EXPECT_EQ(8, b[5]) << "MAXIMUM COMPARE AND WRITE LENGTH: 16, at most a piece (8)";
	EXPECT_EQ(8u, be32(8)) << "MAXIMUM TRANSFER LENGTH";
	EXPECT_EQ(8u, be32(12)) << "OPTIMAL TRANSFER LENGTH";
	EXPECT_LT(0u, be32(20)) << "MAXIMUM UNMAP LBA COUNT";
	EXPECT_LT(0u, be32(24)) << "MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT";
	ASSERT_EQ(COH_SCSI_GOOD, run({ 0x12, 1, 0xb1, 0, 255, 0 }, b).status);
	EXPECT_EQ(0xb1, b[1]);
	EXPECT_EQ(1, b[4] << 8 | b[5]) << "non-rotating medium";
	ASSERT_EQ(COH_SCSI_GOOD, run({ 0x12, 1, 0xb2, 0, 255, 0 }, b).status);
	EXPECT_EQ(0xb2, b[1]);
	EXPECT_EQ(0xe0, b[5] & 0xe0) << "LBPU, LBPWS, LBPWS10";
}

TEST_P(Unit, rtpg_descriptors_and_the_extended_header)
{
	sm_set_tpg(2, 7, 3);
	std::vector<uint8_t> b(128, 0);
	auto r = run({ 0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0 }, b); // extended header
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(8u + 3 * 12, r.data_len);
	EXPECT_EQ(3u * 12 + 4, (uint32_t)b[2] << 8 | b[3]);
	EXPECT_EQ(0x10, b[4] & 0x70) << "format type 001b";
	for (int g = 0; g < 3; g++) {
		const uint8_t *d = &b[8 + 12 * g];
		EXPECT_EQ(0x80, d[0]) << "PREF, active/optimized";
		EXPECT_EQ(0x01, d[1] & 0x01) << "AO_SUP";
		EXPECT_EQ(0x08, d[1] & 0x08) << "U_SUP";
		EXPECT_EQ(0x80, d[1] & 0x80) << "T_SUP";
		EXPECT_EQ(g + 1, d[2] << 8 | d[3]);
		EXPECT_EQ(1, d[7]) << "one port";
		EXPECT_EQ(g == 1 ? 7 : g + 1, d[10] << 8 | d[11]) << "relative port";
	}
	sm_set_state(COH_SCSI_LU_TRANSITIONING);
	r = run({ 0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0 }, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0x0f, b[4 + 12] & 0x0f) << "this node's group: transitioning";
	EXPECT_EQ(0x00, b[4 + 24] & 0x0f);
	// Truncated to the allocation length; RETURN DATA LENGTH still the whole.
	std::vector<uint8_t> s(8, 0);
	r = run({ 0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0 }, s);
	EXPECT_EQ(8u, r.data_len);
	EXPECT_EQ(36u, (uint32_t)s[2] << 8 | s[3]);
}

TEST_P(Unit, changeable_mode_values_are_none_and_request_sense_says_no_sense)
{
	std::vector<uint8_t> b(255, 0xee);
	auto r = run({ 0x5a, 0x08, 0x7f, 0, 0, 0, 0, 0, 255, 0 }, b); // PC 01b, all pages, DBD
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	ASSERT_EQ(8u + 20 + 12, r.data_len);
	EXPECT_EQ(0x08, b[8]);
	EXPECT_EQ(0x12, b[9]);
	for (int i = 10; i < 28; i++)
		EXPECT_EQ(0, b[i]) << "caching page byte " << i - 8;
	EXPECT_EQ(0x0a, b[28]);
	for (int i = 30; i < 40; i++)
		EXPECT_EQ(0, b[i]) << "control page byte " << i - 28;
	std::vector<uint8_t> s(32, 0xee);
	r = run({ 0x03, 0, 0, 0, 32, 0 }, s);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(18u, r.data_len);
	EXPECT_EQ(0x70, s[0]);
	EXPECT_EQ(0, s[2] & 0x0f) << "NO SENSE";
	EXPECT_EQ(0, s[12]);
	expect_sense(run({ 0x03, 0x01, 0, 0, 32, 0 }, s), 0x5, 0x24, 0x00); // DESC
}

// A READ whose Data-In buffer is shorter than its CDB says (LIO passes such a READ on, with the
// overflow as its residual): the blocks that reach into the buffer are read and what fits is
// returned, GOOD. (A WRITE's shorter buffer is refused: bad_cdbs_get_illegal_request.)
TEST_P(Unit, a_read_into_a_shorter_buffer_returns_what_fits)
{
	std::vector<uint8_t> w(3 * kBs), half(kBs + kBs / 2, 0), two(2 * kBs, 0), none;

	for (size_t i = 0; i < w.size(); i++)
		w[i] = (uint8_t)(i * 7 + 3);
	ASSERT_EQ(COH_SCSI_GOOD, run(rw16(0x8a, 40, 3), w).status);
	uint64_t before = sm_submits();
	auto r = run(rw16(0x88, 40, 3), half);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(kBs + kBs / 2, r.data_len);
	EXPECT_EQ(0, memcmp(half.data(), w.data(), half.size()));
	r = run(rw16(0x88, 40, 3), two);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(2 * kBs, r.data_len);
	EXPECT_EQ(0, memcmp(two.data(), w.data(), two.size()));
	EXPECT_GT(sm_submits(), before);
	// No buffer at all: nothing read
	before = sm_submits();
	r = run(rw16(0x88, 40, 3), none);
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(0u, r.data_len);
	EXPECT_EQ(before, sm_submits());
}

TEST_P(Unit, zero_lengths_and_buffers_shorter_than_the_cdb_says)
{
	std::vector<uint8_t> b(2 * kBs, 0);
	uint64_t before = sm_submits();
	for (std::vector<uint8_t> c :
	     { std::vector<uint8_t>{ 0x2a, 0, 0, 0, 0, 1, 0, 0, 0, 0 },
	       std::vector<uint8_t>{ 0xa8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, rw16(0x8a, 1, 0),
	       rw16(0x88, kBlocks, 0) }) {
		auto r = run(c, b);
		EXPECT_EQ(COH_SCSI_GOOD, r.status) << (int)c[0];
		EXPECT_EQ(0u, r.data_len);
	}
	EXPECT_EQ(before, sm_submits()) << "0 blocks: nothing to do";
	// WRITE of 3 blocks from a buffer of 2, COMPARE AND WRITE of 1 block without its write
	// half: INVALID FIELD IN CDB, nothing written.
	expect_sense(run(rw16(0x8a, 0, 3), b), 0x5, 0x24, 0x00);
	std::vector<uint8_t> caw(16, 0), half(kBs, 0);
	caw[0] = 0x89, caw[13] = 1;
	expect_sense(run(caw, half), 0x5, 0x24, 0x00);
	EXPECT_EQ(before, sm_submits());
	// WRITE SAME without its block, UNMAP with a descriptor count past the list.
	std::vector<uint8_t> ws(16, 0);
	ws[0] = 0x93, ws[13] = 4;
	expect_sense(run(ws), 0x5, 0x24, 0x00);
	std::vector<uint8_t> p(24, 0);
	p[3] = 32; // two descriptors said, one given
	expect_sense(run({ 0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0 }, p), 0x5, 0x1a, 0x00);
}

// A transfer split into pieces whose second piece is refused (-EBUSY: the engine's queue is
// full): TASK SET FULL, once, and nothing after it.
TEST_P(Unit, busy_or_an_error_on_a_later_piece_ends_the_command_once)
{
	std::vector<uint8_t> b(20 * kBs, 0);
	uint64_t before = sm_submits();
	sm_fail_after(1, -EBUSY, 1, true); // the second piece is refused at submit
	auto r = run(rw16(0x8a, 0, 20), b, 3);
	EXPECT_EQ(COH_SCSI_TASK_SET_FULL, r.status);
	EXPECT_EQ(0u, r.sense_len);
	EXPECT_EQ(before + 2, sm_submits()) << "no piece after the refused one";
	before = sm_submits();
	sm_fail_after(2, -EIO, 1, false); // the third piece fails at completion
	r = run(rw16(0x88, 0, 20), b, 3);
	expect_sense(r, 0x3, 0x11, 0x00);
	EXPECT_EQ(before + 3, sm_submits());
	sm_fail(0, 0, false);
	EXPECT_EQ(COH_SCSI_GOOD, run(rw16(0x88, 0, 20), b, 3).status);
}

TEST(scsi, every_engine_errno_has_one_answer)
{
	struct {
		int err;
		uint8_t status, key, asc, ascq_read, asc_write;
	} map[] = {
		{ 0, COH_SCSI_GOOD, 0, 0, 0, 0 },
		{ -EBUSY, COH_SCSI_TASK_SET_FULL, 0, 0, 0, 0 },
		{ -ENOMEM, COH_SCSI_BUSY, 0, 0, 0, 0 },
		{ -ENOSPC, COH_SCSI_BUSY, 0, 0, 0, 0 },
		{ -EROFS, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0c, 0x04 },
		{ -ESHUTDOWN, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0c, 0x04 },
		{ -EACCES, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0c, 0x04 },
		{ -ENOTCONN, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0c, 0x04 },
		{ -EHOSTDOWN, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0c, 0x04 },
		{ -EAGAIN, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -ETIMEDOUT, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -ETIME, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -ECONNRESET, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -ECONNREFUSED, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -EPIPE, COH_SCSI_CHECK_CONDITION, 0x2, 0x04, 0x0a, 0x04 },
		{ -EINVAL, COH_SCSI_CHECK_CONDITION, 0x5, 0x24, 0x00, 0x24 },
		{ -ERANGE, COH_SCSI_CHECK_CONDITION, 0x5, 0x24, 0x00, 0x24 },
		{ -EIO, COH_SCSI_CHECK_CONDITION, 0x3, 0x11, 0x00, 0x0c },
		{ -EPROTO, COH_SCSI_CHECK_CONDITION, 0x3, 0x11, 0x00, 0x0c },
	};
	for (auto &m : map) {
		for (bool w : { false, true }) {
			sm_result r{};
			sm_errno_sense(m.err, w, &r);
			EXPECT_EQ(m.status, r.status) << m.err;
			EXPECT_EQ(m.status == COH_SCSI_CHECK_CONDITION ? 18u : 0u, r.sense_len);
			if (m.status != COH_SCSI_CHECK_CONDITION)
				continue;
			EXPECT_EQ(m.key, r.key) << m.err;
			EXPECT_EQ(w ? m.asc_write : m.asc, r.asc) << m.err << " write " << w;
			EXPECT_EQ(m.ascq_read, r.ascq) << m.err;
			EXPECT_FALSE(r.info_valid);
		}
	}
}

// A unit past 2^32 blocks: READ CAPACITY(10) says FFFFFFFFh (use the 16-byte one), READ
// CAPACITY(16) the last LBA; an LBA past 32 bits reaches the block path.
// A volume grown online (cohortd, after cohortctl map grow): the unit's capacity follows from
// the next command on: READ CAPACITY, MODE SENSE's block descriptor, the range checks. It never
// shrinks, and a unit whose reservation table lies right after its blocks does not grow.
TEST_P(Unit, a_grown_volume_is_seen_at_the_next_read_capacity)
{
	std::vector<uint8_t> b(32, 0), d(kBs, 0);
	std::vector<uint8_t> c(16, 0);
	c[0] = 0x9e, c[1] = 0x10, c[13] = 32;
	expect_sense(run(rw16(0x88, kBlocks, 1), d), 0x5, 0x21, 0x00);
	ASSERT_EQ(0, sm_grow(2 * kBlocks));
	EXPECT_EQ(0u, coh_scsi_lu_nblocks(nullptr));
	auto r = run(c, b);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	uint64_t last = 0;
	for (int i = 0; i < 8; i++)
		last = last << 8 | b[i];
	EXPECT_EQ(2 * kBlocks - 1, last);
	std::vector<uint8_t> w = pattern(kBs, 9);
	EXPECT_EQ(COH_SCSI_GOOD, run(rw16(0x8a, 2 * kBlocks - 1, 1), w).status);
	EXPECT_EQ(COH_SCSI_GOOD, run(rw16(0x88, 2 * kBlocks - 1, 1), d).status);
	EXPECT_EQ(w, d);
	expect_sense(run(rw16(0x88, 2 * kBlocks, 1), d), 0x5, 0x21, 0x00);
	// MODE SENSE(10) with LLBAA: the block descriptor's count
	std::vector<uint8_t> m(64, 0);
	r = run({ 0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 64, 0 }, m);
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	uint64_t count = 0;
	for (int i = 0; i < 8; i++)
		count = count << 8 | m[8 + i];
	EXPECT_EQ(2 * kBlocks, count);
	EXPECT_EQ(-EINVAL, sm_grow(kBlocks));
	EXPECT_EQ(-EINVAL, coh_scsi_lu_grow(nullptr, 1));
}

TEST(scsi, a_unit_with_a_reservation_table_does_not_grow)
{
	ASSERT_EQ(0, sm_open_pr(kBs, kBlocks, 16, SM_INLINE));
	EXPECT_EQ(-EBUSY, sm_grow(2 * kBlocks));
	sm_close();
}

TEST(scsi, read_capacity_of_a_unit_past_32_bits)
{
	const uint64_t blocks = (1ull << 33) + 5;
	ASSERT_EQ(0, sm_open_virtual(4096, blocks));
	std::vector<uint8_t> b(32, 0), c10{ 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, c16(16, 0);
	sm_result r{};
	ASSERT_EQ(0, sm_run(c10.data(), 10, b.data(), 32, 1, &r));
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(8u, r.data_len);
	EXPECT_EQ(0xffffffffu, (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
	EXPECT_EQ(4096u, (uint32_t)b[4] << 24 | b[5] << 16 | b[6] << 8 | b[7]);
	c16[0] = 0x9e, c16[1] = 0x10, c16[13] = 32;
	ASSERT_EQ(0, sm_run(c16.data(), 16, b.data(), 32, 1, &r));
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	uint64_t last = 0;
	for (int i = 0; i < 8; i++)
		last = last << 8 | b[i];
	EXPECT_EQ(blocks - 1, last);
	EXPECT_EQ(1u, r.calls);
	// A read at the last block: in range (the block path answers -EIO: MEDIUM ERROR).
	std::vector<uint8_t> d(4096, 0);
	auto rc = rw16(0x88, blocks - 1, 1);
	ASSERT_EQ(0, sm_run(rc.data(), 16, d.data(), 4096, 1, &r));
	expect_sense(r, 0x3, 0x11, 0x00);
	rc = rw16(0x88, blocks, 1);
	ASSERT_EQ(0, sm_run(rc.data(), 16, d.data(), 4096, 1, &r));
	expect_sense(r, 0x5, 0x21, 0x00);
	sm_close();
}

INSTANTIATE_TEST_SUITE_P(completion, Unit, ::testing::Values(SM_INLINE, SM_THREAD),
			 [](const ::testing::TestParamInfo<int> &i) {
				 return i.param == SM_INLINE ? std::string("inline")
							     : std::string("on_another_thread");
			 });

// A long WRITE SAME completed inline runs its pieces in a loop, not a recursion per piece.
TEST(scsi, inline_completion_of_many_pieces_does_not_recurse)
{
	ASSERT_EQ(0, sm_open(512, 1u << 20, 1, SM_INLINE));
	std::vector<uint8_t> blk(512, 0x5a), c(16, 0);
	c[0] = 0x93;
	c[11] = 0x08; // 1 << 19 blocks, one per piece
	sm_result r{};
	ASSERT_EQ(0, sm_run(c.data(), 16, blk.data(), 512, 1, &r));
	EXPECT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(1u, r.calls);
	EXPECT_EQ(0x5a, sm_mem()[((1u << 19) - 1) * 512ull]);
	sm_close();
}

// The default piece size (max_xfer_blocks 0): 256 blocks, and COMPARE AND WRITE up to 16.
TEST(scsi, default_limits_and_the_longest_compare_and_write)
{
	ASSERT_EQ(0, sm_open(512, 1024, 0, SM_INLINE));
	std::vector<uint8_t> b(255, 0), cdb{ 0x12, 1, 0xb0, 0, 255, 0 };
	sm_result r{};
	ASSERT_EQ(0, sm_run(cdb.data(), 6, b.data(), 255, 1, &r));
	ASSERT_EQ(COH_SCSI_GOOD, r.status);
	EXPECT_EQ(16, b[5]);
	EXPECT_EQ(256u, (uint32_t)b[8] << 24 | b[9] << 16 | b[10] << 8 | b[11]);
	std::vector<uint8_t> caw(16, 0), data(2 * 17 * 512, 0);
	caw[0] = 0x89;
	caw[13] = 16;
	uint64_t before = sm_submits();
	ASSERT_EQ(0, sm_run(caw.data(), 16, data.data(), 2 * 16 * 512, 2, &r));
	EXPECT_EQ(COH_SCSI_GOOD, r.status) << "16 blocks of zeros against zeros";
	EXPECT_EQ(before + 1, sm_submits()) << "one operation";
	caw[13] = 17;
	ASSERT_EQ(0, sm_run(caw.data(), 16, data.data(), 2 * 17 * 512, 1, &r));
	expect_sense(r, 0x5, 0x24, 0x00);
	EXPECT_EQ(13, r.sks[1] << 8 | r.sks[2]);
	sm_close();
}

// A command struct from a caller built with a shorter one: refused, answered once, untouched
// beyond what that caller has.
TEST(scsi, a_command_struct_too_short_is_refused)
{
	ASSERT_EQ(0, sm_open(512, 64, 0, SM_INLINE));
	sm_result r{};
	EXPECT_EQ(0, sm_run_short(&r));
	expect_sense(r, 0x5, 0x24, 0x00);
	EXPECT_EQ(1u, r.calls);
	sm_close();
}

// The unit on a real cluster (tests/scsi_engine.c; ctest scsi_engine, label frontend).
TEST(scsi_engine, units_on_every_node_are_one_disk)
{
	EXPECT_EQ(0, sse_every_node_one_disk());
}

// Persistent reservations (engine/scsi/pr.c): three units share one table, as three units on
// different controllers share the volume's: unit 0 is host A through port 1, unit 1 host B
// through port 2, unit 2 host A through port 2 (another I_T nexus of the same host).
namespace
{
constexpr uint32_t kPrBlocks = 16; // 8 KiB of 512-byte blocks

struct Pr : ::testing::TestWithParam<int> {
	void SetUp() override
	{
		ASSERT_EQ(0, sm_open_pr(kBs, kBlocks, kPrBlocks, GetParam()));
	}
	void TearDown() override
	{
		sm_close();
	}
	static sm_result on(uint32_t unit, std::vector<uint8_t> cdb, std::vector<uint8_t> &buf)
	{
		sm_result r{};
		EXPECT_EQ(0, sm_run_on(unit, cdb.data(), (uint32_t)cdb.size(), buf.data(),
				       (uint32_t)buf.size(), &r));
		EXPECT_EQ(1u, r.calls) << "the done callback runs exactly once";
		return r;
	}
	// PERSISTENT RESERVE OUT @sa with @type, keys and parameter byte 20.
	static sm_result out(uint32_t unit, uint8_t sa, uint8_t type, uint64_t key, uint64_t sa_key,
			     uint8_t flags = 0, uint32_t plen = 24)
	{
		std::vector<uint8_t> c(10, 0), p(24, 0);
		c[0] = 0x5f;
		c[1] = sa;
		c[2] = type;
		for (int i = 0; i < 4; i++)
			c[5 + i] = (uint8_t)(plen >> (24 - 8 * i));
		for (int i = 0; i < 8; i++) {
			p[i] = (uint8_t)(key >> (56 - 8 * i));
			p[8 + i] = (uint8_t)(sa_key >> (56 - 8 * i));
		}
		p[20] = flags;
		return on(unit, c, p);
	}
	static std::vector<uint8_t> in(uint32_t unit, uint8_t sa, sm_result *r = nullptr)
	{
		std::vector<uint8_t> c(10, 0), b(4096, 0);
		c[0] = 0x5e;
		c[1] = sa;
		c[7] = 0x10; // allocation length 4096
		sm_result res = on(unit, c, b);
		if (r)
			*r = res;
		EXPECT_EQ(COH_SCSI_GOOD, res.status);
		b.resize(res.data_len);
		return b;
	}
	static uint32_t be32(const std::vector<uint8_t> &b, size_t at)
	{
		return (uint32_t)b[at] << 24 | (uint32_t)b[at + 1] << 16 |
		       (uint32_t)b[at + 2] << 8 | b[at + 3];
	}
	static uint64_t be64(const std::vector<uint8_t> &b, size_t at)
	{
		return (uint64_t)be32(b, at) << 32 | be32(b, at + 4);
	}
	static std::vector<uint64_t> keys(uint32_t unit)
	{
		std::vector<uint8_t> b = in(unit, 0);
		std::vector<uint64_t> k;
		for (size_t at = 8; at + 8 <= 8 + be32(b, 4) && at + 8 <= b.size(); at += 8)
			k.push_back(be64(b, at));
		return k;
	}
	static uint8_t write_status(uint32_t unit)
	{
		std::vector<uint8_t> d(kBs, 0x5a);
		return on(unit, rw16(0x8a, 7, 1), d).status;
	}
	static uint8_t read_status(uint32_t unit)
	{
		std::vector<uint8_t> d(kBs, 0);
		return on(unit, rw16(0x88, 7, 1), d).status;
	}
};

constexpr uint8_t kRegister = 0, kReserve = 1, kRelease = 2, kClear = 3, kPreempt = 4;
constexpr uint8_t kRegisterIgnore = 6;
constexpr uint8_t kConflict = COH_SCSI_RESERVATION_CONFLICT, kGood = COH_SCSI_GOOD;

TEST_P(Pr, a_reservation_taken_through_one_unit_holds_on_the_others)
{
	EXPECT_TRUE(keys(1).empty());
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	EXPECT_EQ(std::vector<uint64_t>{ 0xa }, keys(1)) << "B sees A's key";
	EXPECT_EQ(1u, be32(in(2, 0), 0)) << "PRgeneration";
	ASSERT_EQ(kGood, out(0, kReserve, 1 /* write exclusive */, 0xa, 0).status);

	std::vector<uint8_t> rr = in(1, 1);
	ASSERT_EQ(24u, rr.size());
	EXPECT_EQ(0xau, be64(rr, 8));
	EXPECT_EQ(1u, rr[21]);

	EXPECT_EQ(kConflict, write_status(1)) << "B may not write";
	EXPECT_EQ(kGood, read_status(1)) << "B may read under write exclusive";
	EXPECT_EQ(kConflict, write_status(2)) << "A through another port is another nexus";
	EXPECT_EQ(kGood, write_status(0));
	// RESERVE again by the holder with the same type is no change; by B, a conflict.
	EXPECT_EQ(kGood, out(0, kReserve, 1, 0xa, 0).status);
	EXPECT_EQ(kConflict, out(1, kReserve, 1, 0, 0).status);
	ASSERT_EQ(kGood, out(0, kRelease, 1, 0xa, 0).status);
	EXPECT_EQ(kGood, write_status(1));
	EXPECT_EQ(8u, in(1, 1).size()) << "no reservation";
	EXPECT_EQ(1u, be32(in(1, 1), 0)) << "RESERVE and RELEASE do not change PRgeneration";
}

TEST_P(Pr, registrants_only_and_a_preempt_from_another_host)
{
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	ASSERT_EQ(kGood, out(1, kRegister, 0, 0, 0xb).status);
	ASSERT_EQ(kGood, out(0, kReserve, 5 /* WE, registrants only */, 0xa, 0).status);
	EXPECT_EQ(kGood, write_status(1)) << "a registrant writes";
	EXPECT_EQ(kConflict, write_status(2)) << "an unregistered nexus does not";
	EXPECT_EQ(kGood, read_status(2));

	// B preempts A's reservation and takes exclusive access.
	ASSERT_EQ(kGood, out(1, kPreempt, 3, 0xb, 0xa).status);
	EXPECT_EQ(std::vector<uint64_t>{ 0xb }, keys(0)) << "A's registration is gone";
	std::vector<uint8_t> rr = in(0, 1);
	ASSERT_EQ(24u, rr.size());
	EXPECT_EQ(0xbu, be64(rr, 8));
	EXPECT_EQ(3u, rr[21]);
	EXPECT_EQ(kConflict, write_status(0));
	EXPECT_EQ(kConflict, read_status(0)) << "exclusive access refuses reads too";
	EXPECT_EQ(kGood, write_status(1));
	// A, preempted, cannot act with its old key; it registers again.
	EXPECT_EQ(kConflict, out(0, kRelease, 3, 0xa, 0).status);
	EXPECT_EQ(kGood, out(0, kRegister, 0, 0, 0xc).status);
	EXPECT_EQ(kConflict, read_status(0)) << "registered is not enough for exclusive access";
	// CLEAR by a registrant drops everything.
	ASSERT_EQ(kGood, out(0, kClear, 0, 0xc, 0).status);
	EXPECT_TRUE(keys(1).empty());
	EXPECT_EQ(kGood, write_status(0));
}

TEST_P(Pr, all_registrants_and_unregistering)
{
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	ASSERT_EQ(kGood, out(1, kRegister, 0, 0, 0xb).status);
	ASSERT_EQ(kGood, out(1, kReserve, 8 /* EA, all registrants */, 0xb, 0).status);
	EXPECT_EQ(kGood, write_status(0));
	EXPECT_EQ(kConflict, read_status(2));
	std::vector<uint8_t> rr = in(2, 1);
	ASSERT_EQ(24u, rr.size());
	EXPECT_EQ(0u, be64(rr, 8)) << "an all-registrants reservation reports key 0";
	// A wrong key does not unregister; the right one does; the last one out ends it.
	EXPECT_EQ(kConflict, out(1, kRegister, 0, 0xa, 0).status);
	ASSERT_EQ(kGood, out(1, kRegister, 0, 0xb, 0).status);
	EXPECT_EQ(24u, in(2, 1).size()) << "A still holds it";
	ASSERT_EQ(kGood, out(0, kRegisterIgnore, 0, 0, 0).status);
	EXPECT_EQ(8u, in(2, 1).size()) << "no registrant, no reservation";
	EXPECT_EQ(kGood, read_status(2));
}

TEST_P(Pr, bad_requests_get_their_sense)
{
	EXPECT_EQ(kConflict, out(0, kReserve, 1, 0, 0).status) << "not registered";
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	EXPECT_EQ(kConflict, out(0, kRegister, 0, 0xbad, 0xb).status) << "wrong key";
	expect_sense(out(0, kRegister, 0, 0, 0xb, 0, 23), 0x5, 0x1a, 0x00);
	expect_sense(out(0, kRegister, 0, 0xa, 0xb, 0x04 /* ALL_TG_PT */), 0x5, 0x26, 0x00);
	expect_sense(out(0, kRegister, 0, 0xa, 0xb, 0x08 /* SPEC_I_PT */), 0x5, 0x26, 0x00);
	expect_sense(out(0, kReserve, 2 /* no such type */, 0xa, 0), 0x5, 0x24, 0x00);
	expect_sense(out(0, kReserve, 0x11 /* scope 1 */, 0xa, 0), 0x5, 0x24, 0x00);
	expect_sense(out(0, 7 /* REGISTER AND MOVE */, 1, 0xa, 0), 0x5, 0x24, 0x00);
	expect_sense(out(0, kPreempt, 1, 0xa, 0 /* nobody */), 0x5, 0x26, 0x00);
	ASSERT_EQ(kGood, out(0, kReserve, 1, 0xa, 0).status);
	expect_sense(out(0, kRelease, 3 /* not its type */, 0xa, 0), 0x5, 0x26, 0x04);
	sm_result r{};
	std::vector<uint8_t> c(10, 0), b(64, 0);
	c[0] = 0x5e;
	c[1] = 4; // no such service action
	c[8] = 64;
	expect_sense(on(0, c, b), 0x5, 0x24, 0x00);
	c[1] = 0;
	c[3] = 1; // reserved
	expect_sense(on(0, c, b), 0x5, 0x24, 0x00);
	(void)r;
	// Every answer above left the table as it was: one registration, A's reservation.
	EXPECT_EQ(std::vector<uint64_t>{ 0xa }, keys(1));
	EXPECT_EQ(kConflict, write_status(1));
}

TEST_P(Pr, capabilities_and_full_status_name_each_nexus)
{
	std::vector<uint8_t> cap = in(0, 2);
	ASSERT_EQ(8u, cap.size());
	EXPECT_EQ(0u, cap[2] & 0x0c) << "no SIP_C, no ATP_C";
	EXPECT_EQ(0x01u, cap[3] & 0x01) << "PTPL_A: the table persists";
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	ASSERT_EQ(kGood, out(1, kRegister, 0, 0, 0xb).status);
	ASSERT_EQ(kGood, out(1, kReserve, 1, 0xb, 0).status);
	std::vector<uint8_t> fs = in(2, 3);
	ASSERT_GE(fs.size(), 8u);
	size_t at = 8;
	int seen = 0;
	while (at + 24 <= fs.size()) {
		uint64_t key = be64(fs, at);
		uint32_t tid = be32(fs, at + 20);
		uint16_t port = (uint16_t)(fs[at + 18] << 8 | fs[at + 19]);
		if (key == 0xa) {
			EXPECT_EQ(0u, fs[at + 12] & 1);
			EXPECT_EQ(1u, port);
			EXPECT_EQ(0x05u, fs[at + 24]) << "iSCSI TransportID";
			EXPECT_EQ(0, memcmp(&fs[at + 28], SM_HOST_A, strlen(SM_HOST_A)));
			seen |= 1;
		} else if (key == 0xb) {
			EXPECT_EQ(1u, fs[at + 12] & 1) << "R_HOLDER";
			EXPECT_EQ(1u, fs[at + 13]);
			EXPECT_EQ(2u, port);
			EXPECT_EQ(0x06u, fs[at + 24]) << "SAS TransportID for a naa. name";
			EXPECT_EQ(0x50u, fs[at + 28]);
			EXPECT_EQ(0xd0u, fs[at + 35]);
			seen |= 2;
		}
		at += 24 + tid;
	}
	EXPECT_EQ(3, seen);
	EXPECT_EQ(fs.size(), at);
}

TEST_P(Pr, a_corrupt_table_is_refused_not_read_as_empty)
{
	ASSERT_EQ(kGood, out(0, kRegister, 0, 0, 0xa).status);
	ASSERT_EQ(kGood, out(0, kReserve, 1, 0xa, 0).status);
	uint8_t *table = sm_mem() + kBlocks * kBs;
	table[64 + 9] ^= 0x40; // a bit of the registration's port
	std::vector<uint8_t> c(10, 0), b(64, 0);
	c[0] = 0x5e;
	c[8] = 64;
	expect_sense(on(1, c, b), 0x3, 0x11, 0x00);
	std::vector<uint8_t> d(kBs, 0x5a);
	expect_sense(on(1, rw16(0x8a, 7, 1), d), 0x3, 0x11, 0x00);
	EXPECT_NE(0x5a, sm_mem()[7 * kBs]) << "the write was not applied";
	table[64 + 9] ^= 0x40;
	EXPECT_EQ(kConflict, write_status(1));
}

// Three hosts register and re-register at once, through their own units. Each change is a read
// of the table and a COMPARE AND WRITE against what was read; without the compare one host's
// change would overwrite another's read at the same time (the mock's thread interleaves them).
TEST_P(Pr, changes_at_once_from_every_unit_lose_nothing)
{
	constexpr uint32_t kRounds = 40;
	std::vector<std::thread> th;
	for (uint32_t u = 0; u < 3; u++)
		th.emplace_back([u] {
			for (uint32_t i = 1; i <= kRounds; i++) {
				sm_result r = out(u, kRegisterIgnore, 0, 0, (uint64_t)u << 32 | i);
				EXPECT_EQ(kGood, r.status) << "unit " << u << " round " << i;
			}
		});
	for (auto &t : th)
		t.join();
	std::vector<uint64_t> k = keys(0);
	std::sort(k.begin(), k.end());
	EXPECT_EQ((std::vector<uint64_t>{ kRounds, 1ull << 32 | kRounds, 2ull << 32 | kRounds }),
		  k);
	EXPECT_EQ(3 * kRounds, be32(in(0, 0), 0)) << "PRgeneration counts every change once";
}

// The table holds 31 registrations; the 32nd nexus is refused with its sense, and the table is
// left as it was.
TEST_P(Pr, a_full_table_refuses_the_next_registration)
{
	for (uint32_t i = 0; i < 32; i++) {
		std::string who = "iqn.2026-12.org.cohort:many-" + std::to_string(i);
		std::vector<uint8_t> c(10, 0), p(24, 0);
		sm_result r{};
		c[0] = 0x5f;
		c[8] = 24;
		p[15] = (uint8_t)(0x10 + i);
		ASSERT_EQ(0, sm_run_as(who.c_str(), 7, c.data(), 10, p.data(), 24, &r));
		if (i < 31)
			EXPECT_EQ(kGood, r.status) << "registration " << i;
		else
			expect_sense(r, 0x5, 0x55, 0x04);
	}
	EXPECT_EQ(31u, keys(0).size());
	EXPECT_EQ(31u, be32(in(0, 0), 0));
}

TEST(scsi_pr, units_without_a_table_refuse_reservations_and_bad_tables_are_refused)
{
	ASSERT_EQ(0, sm_open(kBs, kBlocks, 0, SM_INLINE));
	std::vector<uint8_t> c(10, 0), b(64, 0);
	c[0] = 0x5e;
	c[8] = 64;
	sm_result r{};
	ASSERT_EQ(0, sm_run(c.data(), 10, b.data(), 64, 1, &r));
	expect_sense(r, 0x5, 0x20, 0x00);
	EXPECT_EQ(0, sm_lu_new(SM_HOST_A, 1, 16, kBlocks));
	EXPECT_EQ(-EINVAL, sm_lu_new(SM_HOST_A, 1, 8, kBlocks)) << "4 KiB: smaller than a table";
	EXPECT_EQ(-EINVAL, sm_lu_new(nullptr, 1, 16, kBlocks)) << "no initiator";
	EXPECT_EQ(-EINVAL, sm_lu_new("", 1, 16, kBlocks));
	EXPECT_EQ(-EINVAL, sm_lu_new(SM_HOST_A, 1, 16, kBlocks - 1)) << "inside the unit";
	EXPECT_EQ(-EINVAL, sm_lu_new(std::string(224, 'x').c_str(), 1, 16, kBlocks));
	sm_close();
}

INSTANTIATE_TEST_SUITE_P(scsi_pr, Pr, ::testing::Values(SM_INLINE, SM_THREAD));
} // namespace
