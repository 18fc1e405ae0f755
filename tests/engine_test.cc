// engine_test.cc - the operation engine (engine/io.c) on node processes (label cache: it is the
// coherent cache's host path): see engine_io.h for what each scenario forces.
#include <gtest/gtest.h>

#include "cohort/node.h"
#include "engine_io.h"

TEST(engine, state_machine_step_by_step)
{
	EXPECT_EQ(en_state_machine(), 0);
}

TEST(engine, compare_and_write_is_atomic_across_the_cluster)
{
	EXPECT_EQ(en_compare_write_cluster(), 0);
}

TEST(engine, linearizable_with_64_in_flight_per_node)
{
	EXPECT_EQ(en_linz_many_in_flight(), 0);
}

TEST(engine, an_operation_waiting_on_a_peer_does_not_hold_up_others)
{
	EXPECT_EQ(en_parallel(), 0);
}

TEST(engine, a_destage_does_not_retire_a_later_write_not_yet_installed)
{
	EXPECT_EQ(en_destage_race(), 0);
}

// The histogram arithmetic: 4 buckets per power of two, percentiles at a bucket's upper edge.
TEST(engine, latency_percentiles_from_the_histogram)
{
	uint64_t h[COH_LAT_BUCKETS] = {};

	EXPECT_EQ(coh_lat_percentile(h, 0.5), 0u);
	h[(10 - 6) * 4 + 0] = 90; // [1024, 1280) ns
	h[(20 - 6) * 4 + 2] = 10; // [1.5, 1.75) * 2^20 ns
	EXPECT_EQ(coh_lat_percentile(h, 0.5), 1280u);
	EXPECT_EQ(coh_lat_percentile(h, 0.9), 1280u);
	EXPECT_EQ(coh_lat_percentile(h, 0.95), 7ull << 18);
	EXPECT_EQ(coh_lat_percentile(h, 1.0), 7ull << 18);
}
