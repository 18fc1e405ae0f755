// scsi_test.cc - the SCSI logical unit (engine/scsi/lu.c) against the SBC-3/SPC-4 tables, on a
// mock block path in memory (tests/scsi_shim.c) that completes inline or on its own thread.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
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
	EXPECT_EQ(16, b[5]); // MAXIMUM COMPARE AND WRITE LENGTH
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
	expect_sense(run(rw16(0x88, 0, 9), b), 0x5, 0x24, 0x00);	   // longer than the buffer
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
