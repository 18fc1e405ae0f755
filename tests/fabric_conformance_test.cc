// fabric_conformance_test.cc - googletest driver of the fabric conformance suite. Each test runs
// one scenario (tests/conf_scenarios.c) as a cluster of node processes on the provider named by
// COHORT_TEST_PROVIDER, so the same binary is the suite for shm (label fabric) and for rdma in
// the VM rig (label rig).
#include <gtest/gtest.h>

#include "conf_scenarios.h"

namespace
{
constexpr unsigned kTimeout = 120; // seconds, per node process: a backstop, never reached

TEST(conformance, connect__full_mesh_and_loopback)
{
	EXPECT_EQ(0, conf_run("connect", 4, sc_connect, 0, kTimeout));
}

TEST(conformance, write_send__data_visible_when_send_arrives)
{
	EXPECT_EQ(0, conf_run("write_send_order", 2, sc_write_send_order, 0, kTimeout));
}

TEST(conformance, atomics__exact_totals_under_contention_from_4_nodes)
{
	EXPECT_EQ(0, conf_run("atomics", 4, sc_atomics, 0, kTimeout));
}

TEST(conformance, read__concurrent_writes_never_torn_or_stale)
{
	EXPECT_EQ(0, conf_run("read_concurrent", 3, sc_read_concurrent, 0, kTimeout));
}

TEST(conformance, access__rights_bounds_and_revocation)
{
	EXPECT_EQ(0, conf_run("access", 2, sc_access, 0, kTimeout));
}

TEST(conformance, queues__many_outstanding_and_limits)
{
	EXPECT_EQ(0, conf_run("many_outstanding", 2, sc_many_outstanding, 0, kTimeout));
}

TEST(conformance, sizes__1_byte_to_1_MiB)
{
	EXPECT_EQ(0, conf_run("sizes", 2, sc_sizes, 0, kTimeout));
}

TEST(conformance, recv__buffer_too_small)
{
	EXPECT_EQ(0, conf_run("recv_too_small", 2, sc_recv_too_small, 0, kTimeout));
}

TEST(conformance, flush__and_blocking_helpers)
{
	EXPECT_EQ(0, conf_run("flush_and_sync", 2, sc_flush_and_sync, 0, kTimeout));
}

TEST(conformance, peer__sigkilled_mid_traffic)
{
	EXPECT_EQ(0, conf_run("peer_killed", 3, sc_peer_killed, 1ull << 2, kTimeout));
}

TEST(conformance, peer__clean_leave_is_an_event)
{
	EXPECT_EQ(0, conf_run("clean_leave", 2, sc_clean_leave, 0, kTimeout));
}

TEST(conformance, partition__held_then_performed_or_timed_out)
{
	EXPECT_EQ(0, conf_run("partition", 2, sc_partition, 0, kTimeout));
}

TEST(conformance, cq_wake__ends_a_sleeping_wait)
{
	EXPECT_EQ(0, conf_run("cq_wake", 2, sc_cq_wake, 0, kTimeout));
}

TEST(conformance, pmem__flushed_write_in_owner_mapping_and_kept_across_delete)
{
	EXPECT_EQ(0, conf_run("pmem_region", 2, sc_pmem_region, 0, kTimeout));
}
} // namespace

// Cluster authentication (issue 15): the same secret connects; another secret, or none on one
// side, is refused on both sides with EACCES, not a timeout.
TEST(conformance, auth__only_nodes_with_the_cluster_secret_connect)
{
	int res[2];

	ASSERT_EQ(0, conf_auth_pair("correct horse", "correct horse", res));
	EXPECT_EQ(0, res[0]);
	EXPECT_EQ(0, res[1]);
	ASSERT_EQ(0, conf_auth_pair("correct horse", "battery staple", res));
	EXPECT_EQ(-EACCES, res[0]);
	EXPECT_EQ(-EACCES, res[1]);
	ASSERT_EQ(0, conf_auth_pair(nullptr, "correct horse", res));
	EXPECT_EQ(-EACCES, res[0]);
	EXPECT_EQ(-EACCES, res[1]);
	ASSERT_EQ(0, conf_auth_pair(nullptr, nullptr, res));
	EXPECT_EQ(0, res[0]);
	EXPECT_EQ(0, res[1]);
}
