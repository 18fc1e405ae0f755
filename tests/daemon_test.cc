// daemon_test.cc - cohortd and cohortctl (issue 15). The config parser (engine/daemon/conf.c,
// label unit): a good config resolved to the node's attributes and the volume table, and each
// kind of error with its exact file:line:key message. The daemon (label frontend): three real
// cohortd processes on the shm provider run from docs/examples/cohort-3node-shm.conf through
// tests/daemon_cluster.c: they agree on a view, lose a node to SIGKILL and take it back, reload
// exports on SIGHUP and refuse any other change, guard their control sockets, answer a malformed
// request with an error, and all exit 0 after `cohortctl stop`; with fence = agent, a paused
// daemon is fenced by the configured command, or, when it fails, by its lease.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>

#include "daemon.h"

#include "daemon_cluster.h"

// cohortctl without a command prefix (most calls).
static int dc_ctl(struct dc_cluster *c, uint32_t node, const char *args, char *out, size_t len)
{
	return dc_ctl(c, node, args, out, len, nullptr);
}

namespace
{

// A directory with a good secret (0600) and a too-open one (0644), for the parser's tests.
class conf : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/cohort-conf-XXXXXX";

		ASSERT_NE(mkdtemp(tmpl), nullptr);
		dir_ = tmpl;
		write_file(dir_ + "/secret", "0123456789abcdef", 0600);
		write_file(dir_ + "/open", "0123456789abcdef", 0644);
		write_file(dir_ + "/empty", "", 0600);
	}
	void TearDown() override
	{
		std::string cmd = "rm -rf '" + dir_ + "'";
		EXPECT_EQ(system(cmd.c_str()), 0);
	}
	static void write_file(const std::string &path, const std::string &text, mode_t mode)
	{
		int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);

		ASSERT_GE(fd, 0);
		ASSERT_EQ(write(fd, text.data(), text.size()), (ssize_t)text.size());
		ASSERT_EQ(fchmod(fd, mode), 0);
		close(fd);
	}
	// The good config; @SECRET@ is the secret's path.
	std::string good() const
	{
		return "[cluster]\n"						// 1
		       "name = prod\n"						// 2
		       "nodes = 3\n"						// 3
		       "node = 1\n"						// 4
		       "provider = rdma\n"					// 5
		       "address = 10.0.0.1:7000, 10.0.0.2:7000,10.0.0.3:7000\n" // 6
		       "secret = " +
		       dir_ +
		       "/secret\n"		     // 7
		       "timeout_ms = 3000\n"	     // 8
		       "fence = lease\n"	     // 9
		       "\n"			     // 10
		       "[group]\n"		     // 11
		       "raid = raid5\n"		     // 12
		       "element0 = /dev/sdb\n"	     // 13
		       "element1 = /dev/sdc\n"	     // 14
		       "element2 = /dev/sdd\n"	     // 15
		       "element3 = /dev/sde\n"	     // 16
		       "element_size = 1G\n"	     // 17
		       "chunk = 64K\n"		     // 18
		       "; a comment\n"		     // 19
		       "[log]\n"		     // 20
		       "dir = /var/lib/cohort/log\n" // 21
		       "bytes = 8M\n"		     // 22
		       "replicas = 2\n"		     // 23
		       "[cache]\n"		     // 24
		       "blocks = 4096\n"	     // 25
		       "lanes = 3\n"		     // 26
		       "[volume a]\n"		     // 27
		       "size = 1G\n"		     // 28
		       "[volume b]\n"		     // 29
		       "size = 2G\n"		     // 30
		       "[export ea]\n"		     // 31
		       "volume = a\n"		     // 32
		       "hba = 2\n";		     // 33
	}
	// Parse @text (named c.conf) and return the error, "" when it parsed.
	std::string error_of(const std::string &text, int node = -1)
	{
		struct daemon_conf *c = nullptr;
		char err[DAEMON_ERR_MAX] = "";
		int ret = daemon_conf_parse("c.conf", text.data(), text.size(), node, &c, err,
					    sizeof(err));

		if (!ret) {
			daemon_conf_delete(&c);
			return "";
		}
		EXPECT_EQ(c, nullptr);
		return err;
	}
	// @text with the first @from replaced by @to.
	static std::string with(std::string text, const std::string &from, const std::string &to)
	{
		size_t at = text.find(from);

		EXPECT_NE(at, std::string::npos) << from;
		if (at != std::string::npos)
			text.replace(at, from.size(), to);
		return text;
	}
	std::string dir_;
};

TEST_F(conf, parse__good_config_resolves)
{
	struct daemon_conf *c = nullptr;
	struct coh_node_attr a;
	struct coh_fabric_attr fa;
	char err[DAEMON_ERR_MAX] = "";
	std::string text = good();

	ASSERT_EQ(daemon_conf_parse("c.conf", text.data(), text.size(), -1, &c, err, sizeof(err)),
		  0)
	    << err;
	daemon_conf_fabric_attr(c, &fa);
	EXPECT_STREQ(fa.provider, "rdma");
	EXPECT_STREQ(fa.cluster, "10.0.0.1:7000, 10.0.0.2:7000,10.0.0.3:7000");
	EXPECT_EQ(fa.node_id, 1u);
	EXPECT_EQ(fa.timeout_ms, 3000u);
	EXPECT_EQ(fa.secret_len, 16u);
	EXPECT_EQ(memcmp(fa.secret, "0123456789abcdef", 16), 0);
	daemon_conf_node_attr(c, 0, nullptr, &a);
	EXPECT_EQ(a.nodes, 3u);
	EXPECT_EQ(a.raid.level, COH_RAID5);
	EXPECT_EQ(a.raid.nelems, 4u);
	EXPECT_EQ(a.raid.chunk_blocks, 16u);
	EXPECT_STREQ(a.elem_paths[3], "/dev/sde");
	EXPECT_EQ(a.elem_blocks, 262144u);
	EXPECT_EQ(a.block_size, 4096u);
	EXPECT_EQ(a.replicas, 2);
	EXPECT_EQ(a.log_bytes, 8u << 20);
	EXPECT_STREQ(a.log_dir, "/var/lib/cohort/log");
	EXPECT_EQ(a.cache_blocks, 4096u);
	EXPECT_EQ(a.lanes, 3u);
	EXPECT_EQ(a.queue_depth, 128u);
	EXPECT_EQ(a.fence, (uint32_t)COH_FENCE_LEASE);
	EXPECT_EQ(a.timeout_ms, 3000u);
	// Volumes one after the other, from block 0, in file order; RAID-5 over 4: 3 data elements.
	EXPECT_EQ(c->groups[0].capacity_blocks, 3u * 262144u);
	EXPECT_FALSE(c->routed);
	ASSERT_EQ(c->nvolumes, 2u);
	EXPECT_STREQ(c->volumes[0].name, "a");
	EXPECT_EQ(c->volumes[0].first_block, 0u);
	EXPECT_EQ(c->volumes[0].blocks, 262144u);
	EXPECT_EQ(c->volumes[1].first_block, 262144u);
	EXPECT_EQ(c->volumes[1].blocks, 524288u);
	ASSERT_EQ(c->nexports, 1u);
	EXPECT_STREQ(c->exports[0].volume, "a");
	EXPECT_STREQ(c->exports[0].device, "ea"); // the export's name by default
	EXPECT_EQ(c->exports[0].hba, 2u);
	EXPECT_EQ(c->exports[0].cmd_time_out, 0u); // the front end's default
	EXPECT_STREQ(c->control, "/run/cohort/prod-1.sock");
	EXPECT_TRUE(c->frontend_tcmu);
	EXPECT_STREQ(c->configfs, "");
	daemon_conf_delete(&c);
	EXPECT_EQ(c, nullptr);
}

// reservations = cluster carves the table from the volume's end (the host sees it smaller, the
// next volume starts where it did), and every export of such a volume names its one initiator.
// A routed config: the shape, group ga on nodes 0-1 and gb on 1-2, a logical volume on
// each, a virtual volume striped over two more, one concatenating them.
std::string routed(const std::string &secret)
{
	return "[cluster]\n"			     // 1
	       "name = r\n"			     // 2
	       "nodes = 3\n"			     // 3
	       "node = 0\n"			     // 4
	       "provider = rdma\n"		     // 5
	       "address = h0:7000,h1:7000,h2:7000\n" // 6
	       "secret = " +
	       secret +
	       "\n"				     // 7
	       "[group ga]\n"			     // 8
	       "raid = raid5\n"			     // 9
	       "element0 = /e/a0\n"		     // 10
	       "element1 = /e/a1\n"		     // 11
	       "element2 = /e/a2\n"		     // 12
	       "element_size = 16M\n"		     // 13
	       "amfs = 0,1\n"			     // 14
	       "[group gb]\n"			     // 15
	       "raid = raid1\n"			     // 16
	       "element0 = /e/b0\n"		     // 17
	       "element1 = /e/b1\n"		     // 18
	       "element_size = 32M\n"		     // 19
	       "amfs = 1 2\n"			     // 20
	       "preferred = 2\n"		     // 21
	       "address = h0:8000,h1:8000,h2:8000\n" // 22
	       "[volume la]\n"			     // 23
	       "size = 4M\n"			     // 24
	       "group = ga\n"			     // 25
	       "[volume lb]\n"			     // 26
	       "size = 4M\n"			     // 27
	       "group = gb\n"			     // 28
	       "[volume sa]\n"			     // 29
	       "size = 8M\n"			     // 30
	       "group = ga\n"			     // 31
	       "[volume sb]\n"			     // 32
	       "size = 8M\n"			     // 33
	       "group = gb\n"			     // 34
	       "[virtual vs]\n"			     // 35
	       "layout = stripe\n"		     // 36
	       "volumes = sa, sb\n"		     // 37
	       "chunk = 32K\n"			     // 38
	       "[virtual vc]\n"			     // 39
	       "layout = concat\n"		     // 40
	       "volumes = la,lb\n"		     // 41
	       "[export vs]\n"			     // 42
	       "volume = vs\n";			     // 43
}

TEST_F(conf, parse__routed_groups_and_virtual_volumes_resolve)
{
	std::string text = routed(dir_ + "/secret");
	struct daemon_conf *c = nullptr;
	char err[DAEMON_ERR_MAX] = "";
	struct coh_fabric_attr fa;
	struct coh_node_attr a;
	struct coh_map m;

	ASSERT_EQ(daemon_conf_parse("c.conf", text.data(), text.size(), 1, &c, err, sizeof(err)), 0)
	    << err;
	EXPECT_TRUE(c->routed);
	ASSERT_EQ(c->ngroups, 2u);
	EXPECT_STREQ(c->groups[0].name, "ga");
	EXPECT_EQ(c->groups[0].amfs, 0x3u);
	EXPECT_EQ(c->groups[0].preferred, 0u); // the lowest AMF by default
	// RAID-5 over 3 elements of 4096 blocks, chunk one block: 2 data elements.
	EXPECT_EQ(c->groups[0].capacity_blocks, 2u * 4096u);
	// Its engines' fabric: the cluster's ports + 100 (its index + 1), by default.
	EXPECT_STREQ(c->groups[0].address, "h0:7100,h1:7100,h2:7100");
	EXPECT_EQ(c->groups[1].amfs, 0x6u);
	EXPECT_EQ(c->groups[1].preferred, 2u);
	EXPECT_STREQ(c->groups[1].address, "h0:8000,h1:8000,h2:8000");
	daemon_conf_group_fabric_attr(c, 1, &fa);
	EXPECT_STREQ(fa.cluster, "h0:8000,h1:8000,h2:8000");
	EXPECT_EQ(fa.node_id, 1u);
	daemon_conf_node_attr(c, 1, nullptr, &a);
	EXPECT_EQ(a.raid.level, COH_RAID1);
	EXPECT_EQ(a.raid.nelems, 2u);
	EXPECT_STREQ(a.elem_paths[1], "/e/b1");
	// Volumes are carved per group, in file order.
	ASSERT_EQ(c->nvolumes, 6u);
	EXPECT_EQ(c->volumes[0].group, 0u);
	EXPECT_EQ(c->volumes[0].first_block, 0u);
	EXPECT_EQ(c->volumes[1].group, 1u);
	EXPECT_EQ(c->volumes[1].first_block, 0u);
	EXPECT_EQ(c->volumes[2].first_block, 1024u);
	EXPECT_EQ(c->volumes[3].first_block, 1024u);
	EXPECT_EQ(c->volumes[4].kind, (uint32_t)COH_MAP_VIRTUAL);
	EXPECT_EQ(c->volumes[4].stripe_blocks, 8u);
	EXPECT_EQ(c->volumes[4].blocks, 4096u);
	EXPECT_EQ(c->volumes[5].blocks, 2048u);
	// The table the router gets passes its check, and names what the config named.
	daemon_conf_map(c, &m);
	EXPECT_EQ(coh_map_check(&m, err, sizeof(err)), 0) << err;
	EXPECT_EQ(coh_map_find(&m, "vs"), 4);
	EXPECT_EQ(m.volumes[4].comp[1], 3u);
	EXPECT_EQ(memcmp(m.volumes[4].id, c->volumes[4].id, 16), 0);
	daemon_conf_delete(&c);
	// shm: each group's directory beside the cluster's.
	text = with(with(routed(dir_ + "/secret"), "provider = rdma", "provider = shm"),
		    "address = h0:7000,h1:7000,h2:7000", "address = /dev/shm/r");
	text = with(text, "address = h0:8000,h1:8000,h2:8000\n", "");
	text = with(text, "volume = vs\n", "volume = vs\ndevice = vs-%n\n");
	ASSERT_EQ(daemon_conf_parse("c.conf", text.data(), text.size(), 1, &c, err, sizeof(err)), 0)
	    << err;
	EXPECT_STREQ(c->groups[0].address, "/dev/shm/r-ga");
	EXPECT_STREQ(c->groups[1].address, "/dev/shm/r-gb");
	daemon_conf_delete(&c);
}

TEST_F(conf, parse__routed_errors_name_the_section)
{
	const std::string r = routed(dir_ + "/secret");

	EXPECT_EQ(error_of(with(r, "amfs = 0,1", "amfs = 0,3")),
		  "c.conf:14: [group ga] amfs: node 3 is not below nodes = 3");
	EXPECT_EQ(error_of(with(r, "amfs = 0,1", "amfs = 0,x")),
		  "c.conf:14: [group ga] amfs: \"x\" is not a node id (0 to 31)");
	EXPECT_EQ(error_of(with(r, "amfs = 0,1", "amfs = 1,1")),
		  "c.conf:14: [group ga] amfs: node 1 given twice");
	EXPECT_EQ(error_of(with(r, "preferred = 2", "preferred = 0")),
		  "c.conf:21: [group gb] preferred: node 0 is not one of the group's amfs");
	EXPECT_EQ(error_of(with(r, "group = gb\n[volume sa]", "group = gc\n[volume sa]")),
		  "c.conf:28: [volume lb] group: no [group gc]");
	EXPECT_EQ(error_of(with(r, "size = 4M\ngroup = ga\n", "size = 4M\n")),
		  "c.conf:23: [volume la] group: missing (2 groups: name the volume's)");
	EXPECT_EQ(error_of(with(r, "volumes = sa, sb", "volumes = sa, sx")),
		  "c.conf:37: [virtual vs] volumes: no [volume sx]");
	EXPECT_EQ(error_of(with(r, "volumes = sa, sb", "volumes = sa, sa")),
		  "c.conf:37: [virtual vs] volumes: sa given twice");
	EXPECT_EQ(error_of(with(r, "volumes = la,lb", "volumes = la,vs")),
		  "c.conf:41: [virtual vc] volumes: vs is virtual (components are [volume] "
		  "sections)");
	EXPECT_EQ(error_of(with(r, "volumes = la,lb", "volumes = sb,lb")),
		  "c.conf:41: [virtual vc] volumes: sb is in [virtual vs] already (a volume is in "
		  "one virtual volume at most)");
	EXPECT_EQ(error_of(with(r, "volumes = sa, sb", "volumes = sa, lb")),
		  "c.conf:37: [virtual vs] volumes: a stripe's volumes are all one size, a "
		  "multiple of the chunk (8 blocks): lb has 1024");
	EXPECT_EQ(error_of(with(r, "layout = stripe", "layout = mirror")),
		  "c.conf:36: [virtual vs] layout: unknown layout \"mirror\" (stripe, concat)");
	EXPECT_EQ(error_of(with(r, "layout = concat\n", "layout = concat\nchunk = 8K\n")),
		  "c.conf:41: [virtual vc] chunk: only with layout = stripe");
	EXPECT_EQ(error_of(with(r, "[virtual vc]", "[virtual la]")),
		  "c.conf:39: [virtual la]: a volume of that name is on line 23");
	EXPECT_EQ(error_of(with(r, "[group gb]", "[group]")),
		  "c.conf:15: [group]: [group] and [group NAME] do not mix (one unnamed group, "
		  "or named groups for routing)");
	EXPECT_EQ(error_of(with(r, "address = h0:8000,h1:8000,h2:8000",
				"address = h0:7100,h1:7100,h2:7100")),
		  "c.conf:22: [group gb] address: \"h0:7100,h1:7100,h2:7100\" is [group ga]'s too");
	EXPECT_EQ(error_of(with(r, "address = h0:8000,h1:8000,h2:8000", "address = h0:8000")),
		  "c.conf:22: [group gb] address: 1 addresses for 3 nodes (rdma wants one "
		  "host:port per node)");
	EXPECT_EQ(error_of(with(r, "size = 8M\ngroup = gb", "size = 32M\ngroup = gb")),
		  "c.conf:33: [volume sb] size: 8192 blocks do not fit: 7168 of the group gb's "
		  "8192 blocks are left (volumes are carved in file order)");
	EXPECT_EQ(error_of(with(r, "size = 4M\ngroup = ga",
				"size = 4M\ngroup = ga\nreservations = cluster")),
		  "c.conf:26: [volume la] reservations: cluster is not built for routed volumes "
		  "([group NAME])");
	// An export may name a volume made online (looked up in the table when attached), but
	// such a volume has no reservations; an unrouted config's export names its own volumes.
	EXPECT_EQ(error_of(with(r, "volume = vs\n", "volume = nv\n")), "");
	EXPECT_EQ(error_of(with(r, "volume = vs\n",
				"volume = nv\ninitiator = iqn.2026-12.org.example:h1\n")),
		  "c.conf:42: [export vs] initiator: no [volume nv] with reservations = cluster (a "
		  "volume made online has none)");
	// The unnamed group takes no routing keys, and a virtual volume needs named groups.
	EXPECT_EQ(error_of(with(good(), "chunk = 64K\n", "chunk = 64K\namfs = 0\n")),
		  "c.conf:19: [group] amfs: only in a [group NAME] (the unnamed [group] is every "
		  "node's)");
	EXPECT_EQ(error_of(good() + "[virtual v]\nlayout = concat\nvolumes = a,b\n"),
		  "c.conf:34: [virtual v]: virtual volumes need [group NAME] sections (routing)");
	// The mapping table's own check is the last word: a name too long for it.
	EXPECT_EQ(error_of(with(r, "[volume la]", "[volume la0123456789012345678901234567890]")),
		  "c.conf:23: [volume la0123456789012345678901234567890]: a routed volume's name "
		  "has at most 31 bytes");
}

TEST_F(conf, parse__reservations_need_one_initiator_per_export)
{
	struct daemon_conf *c = nullptr;
	char err[DAEMON_ERR_MAX] = "";
	std::string text =
	    with(with(good(), "[volume a]\nsize = 1G\n",
		      "[volume a]\nsize = 1G\nreservations = cluster\n"),
		 "hba = 2\n", "hba = 2\ninitiator = iqn.2026-12.org.example:host1\n");

	ASSERT_EQ(daemon_conf_parse("c.conf", text.data(), text.size(), -1, &c, err, sizeof(err)),
		  0)
	    << err;
	EXPECT_EQ(c->volumes[0].pr_blocks, 2u); // 8 KiB of 4 KiB blocks
	EXPECT_EQ(c->volumes[0].blocks, 262144u - 2u);
	EXPECT_EQ(c->volumes[1].first_block, 262144u);
	EXPECT_EQ(c->volumes[1].pr_blocks, 0u);
	EXPECT_STREQ(c->exports[0].initiator, "iqn.2026-12.org.example:host1");
	daemon_conf_delete(&c);

	std::string no_init = with(good(), "[volume a]\nsize = 1G\n",
				   "[volume a]\nsize = 1G\nreservations = cluster\n");
	EXPECT_EQ(error_of(no_init), "c.conf:32: [export ea] initiator: missing: [volume a] has "
				     "reservations = cluster");
	EXPECT_EQ(
	    error_of(with(good(), "hba = 2\n", "hba = 2\ninitiator = naa.5001405000000001\n")),
	    "c.conf:31: [export ea] initiator: [volume a] has no reservations "
	    "(reservations = cluster)");
	EXPECT_EQ(
	    error_of(with(no_init, "hba = 2\n", "hba = 2\ninitiator = host1\n")),
	    "c.conf:35: [export ea] initiator: \"host1\" is not an initiator name (iqn., eui. "
	    "or naa., then at most 219 printable bytes without spaces or commas)");
	EXPECT_EQ(error_of(with(good(), "[volume a]\nsize = 1G\n",
				"[volume a]\nsize = 1G\nreservations = yes\n")),
		  "c.conf:29: [volume a] reservations: \"yes\" is not none or cluster");
	EXPECT_EQ(error_of(with(good(), "[volume a]\nsize = 1G\n",
				"[volume a]\nsize = 8K\nreservations = cluster\n")),
		  "c.conf:28: [volume a] size: 8192 bytes leave no room beside the reservation "
		  "table (8192 bytes)");
}

TEST_F(conf, parse__volume_id_depends_on_cluster_and_name_only)
{
	struct daemon_conf *c1 = nullptr, *c2 = nullptr, *c3 = nullptr;
	char err[DAEMON_ERR_MAX] = "", hex[33];
	std::string t1 = good(),
		    t2 = with(with(good(), "node = 1", "node = 2"), "\nsize = 1G", "\nsize = 4K");
	std::string t3 = with(good(), "name = prod", "name = test");

	ASSERT_EQ(daemon_conf_parse("1", t1.data(), t1.size(), -1, &c1, err, sizeof(err)), 0)
	    << err;
	ASSERT_EQ(daemon_conf_parse("2", t2.data(), t2.size(), -1, &c2, err, sizeof(err)), 0)
	    << err;
	ASSERT_EQ(daemon_conf_parse("3", t3.data(), t3.size(), -1, &c3, err, sizeof(err)), 0)
	    << err;
	// Another node, another size: the same id. Another cluster: another id.
	EXPECT_EQ(memcmp(c1->volumes[0].id, c2->volumes[0].id, 16), 0);
	EXPECT_NE(memcmp(c1->volumes[0].id, c1->volumes[1].id, 16), 0);
	EXPECT_NE(memcmp(c1->volumes[0].id, c3->volumes[0].id, 16), 0);
	daemon_volume_id_hex(c1->volumes[0].id, hex);
	EXPECT_EQ(strlen(hex), 32u);
	daemon_conf_delete(&c1);
	daemon_conf_delete(&c2);
	daemon_conf_delete(&c3);
}

TEST_F(conf, parse__node_override)
{
	struct daemon_conf *c = nullptr;
	char err[DAEMON_ERR_MAX] = "";
	std::string text = with(good(), "node = 1\n", "");

	EXPECT_EQ(error_of(text), "c.conf:1: [cluster] node: missing");
	ASSERT_EQ(daemon_conf_parse("c.conf", text.data(), text.size(), 2, &c, err, sizeof(err)), 0)
	    << err;
	EXPECT_EQ(c->node, 2u);
	EXPECT_STREQ(c->control, "/run/cohort/prod-2.sock");
	daemon_conf_delete(&c);
	EXPECT_EQ(error_of(good(), 3),
		  "c.conf:3: [cluster] nodes: --node 3 is not below nodes = 3");
}

TEST_F(conf, parse__syntax_error)
{
	EXPECT_EQ(error_of(with(good(), "[log]", "[log")),
		  "c.conf:20: syntax error (want [section], key = value, or a ;/# comment)");
	EXPECT_EQ(error_of(with(good(), "bytes = 8M", "bytes 8M")),
		  "c.conf:22: syntax error (want [section], key = value, or a ;/# comment)");
	EXPECT_EQ(error_of("name = x\n[cluster]\n"), "c.conf:1: name: a key before any [section]");
	EXPECT_EQ(error_of(with(good(), "lanes = 3", "lanes = 3" + std::string(200, ' ') + "x")),
		  "c.conf:26: line longer than 198 bytes");
	EXPECT_EQ(error_of(with(good(), "lanes = 3", std::string("lanes = 3\0x", 11))),
		  "c.conf:26: a NUL byte in the line");
}

TEST_F(conf, parse__unknown_section_and_key)
{
	EXPECT_EQ(error_of(with(good(), "fence = lease", "fencing = lease")),
		  "c.conf:9: [cluster] fencing: unknown key");
	EXPECT_EQ(error_of(with(good(), "[cache]", "[caches]")),
		  "c.conf:24: [caches]: unknown section (cluster, group, log, cache, daemon, "
		  "volume NAME, export NAME, group NAME, virtual NAME)");
	EXPECT_EQ(error_of(with(good(), "element3", "element16")),
		  "c.conf:16: [group] element16: unknown key (element0 .. element15)");
	EXPECT_EQ(error_of(with(good(), "hba = 2", "lun = 2")),
		  "c.conf:33: [export ea] lun: unknown key (volume, device, hba, cmd_time_out, "
		  "initiator)");
}

TEST_F(conf, parse__missing_key)
{
	EXPECT_EQ(error_of(with(good(), "raid = raid5\n", "")), "c.conf:11: [group] raid: missing");
	EXPECT_EQ(error_of(with(good(), "name = prod\n", "")), "c.conf:1: [cluster] name: missing");
	EXPECT_EQ(error_of(with(good(), "size = 2G\n", "")),
		  "c.conf:29: [volume b]: empty section");
	EXPECT_EQ(error_of(with(good(), "volume = a\n", "")),
		  "c.conf:31: [export ea] volume: missing");
	EXPECT_EQ(error_of(with(good(), "element1 = /dev/sdc\n", "")),
		  "c.conf:12: [group] element: element1 missing (elements are numbered from 0, no "
		  "gap)");
	EXPECT_EQ(error_of("[cluster]\nname = x\nnodes = 2\nnode = 0\nprovider = shm\naddress = "
			   "/dev/shm/x\nsecret = /s\n"),
		  "c.conf:7: [group] raid: missing (no [group] section)");
}

TEST_F(conf, parse__bad_value)
{
	EXPECT_EQ(error_of(with(good(), "raid5", "raid7")),
		  "c.conf:12: [group] raid: unknown level \"raid7\" (raid1, raid5)");
	EXPECT_EQ(error_of(with(good(), "nodes = 3", "nodes = 33")),
		  "c.conf:3: [cluster] nodes: \"33\" is not a number from 2 to 32");
	EXPECT_EQ(error_of(with(good(), "nodes = 3", "nodes = -3")),
		  "c.conf:3: [cluster] nodes: \"-3\" is not a number from 2 to 32");
	EXPECT_EQ(error_of(with(good(), "\nsize = 1G", "\nsize = 1X")),
		  "c.conf:28: [volume a] size: \"1X\" is not a size (a number of bytes, with K, M, "
		  "G or T)");
	EXPECT_EQ(error_of(with(good(), "\nsize = 1G", "\nsize = 1000")),
		  "c.conf:28: [volume a] size: 1000 bytes is not a multiple of the block size "
		  "(4096)");
	EXPECT_EQ(error_of(with(good(), "provider = rdma", "provider = tcp")),
		  "c.conf:5: [cluster] provider: unknown provider \"tcp\" (shm, rdma)");
	EXPECT_EQ(error_of(with(good(), ",10.0.0.3:7000", "")),
		  "c.conf:6: [cluster] address: 2 addresses for 3 nodes (rdma wants one host:port "
		  "per node)");
	EXPECT_EQ(error_of(with(good(), "10.0.0.2:7000", "10.0.0.2:0")),
		  "c.conf:6: [cluster] address: \"10.0.0.2:0\" is not host:port (entry 1)");
	EXPECT_EQ(error_of(with(good(), "replicas = 2", "replicas = 3")),
		  "c.conf:23: [log] replicas: 3 is not below nodes = 3");
	EXPECT_EQ(error_of(with(good(), "node = 1", "node = 3")),
		  "c.conf:4: [cluster] node: 3 is not below nodes = 3");
	EXPECT_EQ(error_of(with(good(), "[volume b]", "[volume b/c]")),
		  "c.conf:29: [volume b/c]: \"b/c\" is not a name (1 to 64 letters, digits, '_', "
		  "'-', '.')");
	EXPECT_EQ(error_of(with(good(), "volume = a", "volume = z")),
		  "c.conf:31: [export ea] volume: no [volume z]");
	EXPECT_EQ(error_of(with(good(), "element3 = /dev/sde", "element3 = /dev/sdb")),
		  "c.conf:16: [group] element3: the same path as element0");
	EXPECT_EQ(error_of(with(good(), "chunk = 64K", "chunk = 6000")),
		  "c.conf:18: [group] chunk: 6000 bytes is not a multiple of the block size (4096) "
		  "within element_size");
	EXPECT_EQ(error_of(good() + "[daemon]\nfrontend = iscsi\n"),
		  "c.conf:35: [daemon] frontend: unknown front end \"iscsi\" (tcmu, none)");
	EXPECT_EQ(error_of(good() + "cmd_time_out = 0\n"),
		  "c.conf:34: [export ea] cmd_time_out: \"0\" is not a number from 5 to 3600");
	EXPECT_EQ(error_of(good() + "cmd_time_out = 10\n"), "");
	EXPECT_EQ(error_of(with(good(), "fence = lease", "fence = stonith")),
		  "c.conf:9: [cluster] fence: unknown fencing \"stonith\" (auto, lease, agent)");
	EXPECT_EQ(error_of(with(good(), "fence = lease", "fence = agent")),
		  "c.conf:9: [cluster] fence: agent needs fence_agent, the command that fences a "
		  "node");
	EXPECT_EQ(error_of(with(good(), "fence = lease", "fence = lease\nfence_agent = x")),
		  "c.conf:10: [cluster] fence_agent: used only with fence = agent (fence = lease)");
	EXPECT_EQ(error_of(with(good(), "fence = lease", "fence = agent\nfence_agent =")),
		  "c.conf:10: [cluster] fence_agent: empty path");
	EXPECT_EQ(
	    error_of(with(good(), "fence = lease",
			  "fence = agent\nfence_agent = ipmitool -H bmc%n chassis power off")),
	    "");
}

TEST_F(conf, parse__duplicates)
{
	EXPECT_EQ(error_of(with(good(), "lanes = 3", "lanes = 3\nlanes = 2")),
		  "c.conf:27: [cache] lanes: given twice (first on line 26)");
	EXPECT_EQ(error_of(good() + "[log]\nbytes = 1M\n"),
		  "c.conf:34: [log]: section given twice (first on line 20)");
	EXPECT_EQ(error_of(good() + "[volume a]\nsize = 4K\n"),
		  "c.conf:34: [volume a]: section given twice (first on line 27)");
	EXPECT_EQ(error_of(good() + "[export eb]\nvolume = b\ndevice = ea\nhba = 2\n"),
		  "c.conf:34: [export eb] device: user_2/ea is [export ea]'s device too");
}

TEST_F(conf, parse__device_names_carry_the_node_id)
{
	// "%n" is the node id, so that the nodes of one host make different backstores.
	std::string t = good() + "[export eb]\nvolume = b\ndevice = vol-b.%n\n" +
			"[daemon]\ncontrol = /run/c/%n.sock\n";
	struct daemon_conf *c = nullptr;
	char err[512] = "";

	for (int node = 0; node < 3; node++) {
		ASSERT_EQ(
		    daemon_conf_parse("c.conf", t.data(), t.size(), node, &c, err, sizeof(err)), 0)
		    << err;
		ASSERT_EQ(c->nexports, 2u);
		EXPECT_EQ(std::string(c->exports[1].device), "vol-b." + std::to_string(node));
		EXPECT_EQ(std::string(c->control), "/run/c/" + std::to_string(node) + ".sock");
		daemon_conf_delete(&c);
	}
	EXPECT_EQ(
	    error_of(good() + "[export eb]\nvolume = b\ndevice = vol%x\n"),
	    "c.conf:36: [export eb] device: \"vol%x\" is not a name (1 to 64 letters, digits, "
	    "'_', '-', '.'; %n for the node id)");
	// On shm every node runs on this host: one name for all would be one backstore.
	std::string shm = with(with(good(), "provider = rdma", "provider = shm"),
			       "address = 10.0.0.1:7000, 10.0.0.2:7000,10.0.0.3:7000",
			       "address = /dev/shm/cohort-prod");
	EXPECT_EQ(error_of(shm),
		  "c.conf:31: [export ea] device: every node of an shm cluster runs on this host, "
		  "so each would make user_2/ea: put %n (the node id) in the name");
	EXPECT_EQ(error_of(shm + "[daemon]\nfrontend = none\n"), "");
	EXPECT_EQ(error_of(with(shm, "hba = 2", "hba = 2\ndevice = ea-%n")), "");
}

TEST_F(conf, parse__volumes_do_not_fit)
{
	// 3 data elements of 1 GiB: 1 GiB + 2 GiB leave none for a third volume.
	EXPECT_EQ(error_of(good() + "[volume c]\nsize = 4K\n"),
		  "c.conf:35: [volume c] size: 1 blocks do not fit: 0 of the group's 786432 "
		  "blocks are left (volumes are carved in file order)");
	EXPECT_EQ(error_of(with(good(), "size = 2G", "size = 3G")),
		  "c.conf:30: [volume b] size: 786432 blocks do not fit: 524288 of the group's "
		  "786432 blocks are left (volumes are carved in file order)");
}

TEST_F(conf, parse__secret_file)
{
	std::string path = dir_ + "/secret";

	EXPECT_EQ(error_of(with(good(), path, dir_ + "/none")),
		  "c.conf:7: [cluster] secret: " + dir_ + "/none: No such file or directory");
	EXPECT_EQ(error_of(with(good(), path, dir_ + "/open")),
		  "c.conf:7: [cluster] secret: " + dir_ +
		      "/open: mode 0644 lets others read it (chmod 0600)");
	EXPECT_EQ(error_of(with(good(), path, dir_ + "/empty")),
		  "c.conf:7: [cluster] secret: " + dir_ + "/empty: empty");
	EXPECT_EQ(error_of(with(good(), path, dir_)),
		  "c.conf:7: [cluster] secret: " + dir_ + ": not a regular file");
}

TEST_F(conf, load__file_errors_and_example)
{
	struct daemon_conf *c = nullptr;
	char err[DAEMON_ERR_MAX] = "";

	EXPECT_EQ(daemon_conf_load((dir_ + "/none.conf").c_str(), -1, &c, err, sizeof(err)),
		  -ENOENT);
	EXPECT_EQ(std::string(err), dir_ + "/none.conf: No such file or directory");
	write_file(dir_ + "/c.conf", with(good(), "raid5", "raid7"), 0600);
	EXPECT_EQ(daemon_conf_load((dir_ + "/c.conf").c_str(), -1, &c, err, sizeof(err)), -EINVAL);
	EXPECT_EQ(std::string(err),
		  dir_ + "/c.conf:12: [group] raid: unknown level \"raid7\" (raid1, raid5)");
	EXPECT_EQ(c, nullptr);
}

TEST_F(conf, diff__only_exports_may_change)
{
	struct daemon_conf *a = nullptr, *b = nullptr;
	char err[DAEMON_ERR_MAX] = "", what[2 * DAEMON_ERR_MAX] = "";
	std::string t = good(), t2 = good() + "[export eb]\nvolume = b\n";
	std::string t3 = with(good(), "chunk = 64K", "chunk = 128K");

	ASSERT_EQ(daemon_conf_parse("c", t.data(), t.size(), -1, &a, err, sizeof(err)), 0) << err;
	ASSERT_EQ(daemon_conf_parse("c", t2.data(), t2.size(), -1, &b, err, sizeof(err)), 0) << err;
	EXPECT_FALSE(daemon_conf_core_diff(a, b, what, sizeof(what)));
	daemon_conf_delete(&b);
	ASSERT_EQ(daemon_conf_parse("c", t3.data(), t3.size(), -1, &b, err, sizeof(err)), 0) << err;
	EXPECT_TRUE(daemon_conf_core_diff(a, b, what, sizeof(what)));
	EXPECT_STREQ(what,
		     "[group] chunk = 16 blocks (running) / [group] chunk = 32 blocks (file)");
	daemon_conf_delete(&a);
	daemon_conf_delete(&b);
}

// The daemons. Bounds: a view within 60 s (an open is 10 x timeout_ms = 20 s at most, a view
// change a few timeouts), an exit within 60 s.
#define DT_VIEW_MS 60000
#define DT_EXIT_MS 60000

TEST(daemon, three_nodes__view_kill_rejoin_reload_stop)
{
	struct dc_cluster *c = nullptr;
	char out[8192], resp[2048];
	unsigned dmode = 0, smode = 0;
	uint32_t epoch = 0, epoch2 = 0, i;
	int st = -1;

	// configure
	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_DAEMON_EXAMPLE, 3, &c), 0);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(dc_start(c, i), 0);

	// all three agree on one view of 3 members with quorum
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	EXPECT_EQ(dc_ctl(c, 1, "volumes", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "vol0"), nullptr) << out;
	EXPECT_NE(strstr(out, "vol1"), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "3 of 3 members, quorum yes"), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 2, "--json stats", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "\"lock_transfers\""), nullptr) << out;
	EXPECT_NE(strstr(out, "\"full_waits\""), nullptr) << out;
	EXPECT_NE(strstr(out, "\"formations_failed\""), nullptr) << out;
	EXPECT_NE(strstr(out, "\"locks_taken\": 0"), nullptr) << out;
	EXPECT_NE(strstr(out, "\"grants_lost\": 0"), nullptr) << out;
	EXPECT_NE(strstr(out, "\"replies_dropped\": 0"), nullptr) << out;
	EXPECT_EQ(strstr(out, "\"size\": 0,"), nullptr) << out; // the log region has a size
	// one unnamed group: no mapping table to show
	EXPECT_EQ(dc_ctl(c, 0, "map", out, sizeof(out)), 1);
	EXPECT_NE(strstr(out, "no mapping table"), nullptr) << out;

	// SIGKILL node 2: the others see 2 members in a later epoch; it comes back and rejoins
	ASSERT_EQ(dc_signal(c, 2, SIGKILL), 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch2), 0);
	EXPECT_GT(epoch2, epoch);
	EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "2     dead"), nullptr) << out;
	// node 1's log was on node 2: moved by the view change, and no longer moving once the
	// view is committed
	EXPECT_EQ(dc_ctl(c, 1, "--json status", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "\"log_moving\": false"), nullptr) << out;
	EXPECT_NE(strstr(out, "\"abandon_pending\": false"), nullptr) << out;
	ASSERT_EQ(dc_start(c, 2), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	EXPECT_GT(epoch, epoch2);

	// SIGTERM node 2: a clean leave, exit 0; it starts again and rejoins
	ASSERT_EQ(dc_signal(c, 2, SIGTERM), 0);
	ASSERT_EQ(dc_wait_exit(c, 2, DT_EXIT_MS, &st), 0);
	EXPECT_TRUE(WIFEXITED(st));
	EXPECT_EQ(WEXITSTATUS(st), 0);
	EXPECT_EQ(dc_log_wait(c, 2, "node: closed cleanly", DT_EXIT_MS), 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch2), 0);
	ASSERT_EQ(dc_start(c, 2), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	EXPECT_GT(epoch, epoch2);

	// cohortctl finds the socket from the config too
	{
		char path[256], cmd[700];
		size_t n;
		FILE *p;

		dc_conf_path(c, 1, path, sizeof(path));
		snprintf(cmd, sizeof(cmd), "'%s/cohortctl' -c '%s' --node 1 status 2>&1",
			 COHORT_BIN_DIR, path);
		p = popen(cmd, "r");
		ASSERT_NE(p, nullptr);
		n = fread(out, 1, sizeof(out) - 1, p);
		out[n] = '\0';
		EXPECT_EQ(pclose(p), 0) << out;
		EXPECT_NE(strstr(out, "cluster demo: node 1 of 3"), nullptr) << out;
	}

	// SIGHUP with an export added: shown, and honestly not attached
	ASSERT_EQ(dc_append_conf(c, 0, "[export extra]\nvolume = vol1\nhba = 1\n"), 0);
	ASSERT_EQ(dc_signal(c, 0, SIGHUP), 0);
	ASSERT_EQ(dc_log_wait(c, 0, "config: reloaded: 2 exports", DT_EXIT_MS), 0);
	EXPECT_EQ(dc_ctl(c, 0, "exports", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "extra"), nullptr) << out;
	EXPECT_NE(strstr(out, "user_1/extra"), nullptr) << out;
	EXPECT_NE(strstr(out, "not attached (no front end: [daemon] frontend = none)"), nullptr)
	    << out;
	// node 2's TCMU front end finds no target core: the attach fails, is said so, and the
	// daemon serves on
	EXPECT_EQ(dc_ctl(c, 2, "exports", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "user_0/cohort-vol0"), nullptr) << out;
	EXPECT_NE(strstr(out, "attach failed: "), nullptr) << out;
	EXPECT_NE(strstr(out, "front end: tcmu"), nullptr) << out;
	EXPECT_EQ(dc_log_wait(c, 2, "no configfs target core", DT_EXIT_MS), 0);

	// SIGHUP with [group] changed: refused, named, and the daemon serves on
	ASSERT_EQ(dc_append_conf(c, 1, "[group]\n"), 0); // a second [group]: a bad config
	ASSERT_EQ(dc_signal(c, 1, SIGHUP), 0);
	ASSERT_EQ(dc_log_wait(c, 1, "section given twice", DT_EXIT_MS), 0);
	{
		char path[256], cmd[600];

		dc_conf_path(c, 1, path, sizeof(path));
		snprintf(cmd, sizeof(cmd), "sed -i -e '$d' -e 's/^chunk = 64K/chunk = 128K/' '%s'",
			 path);
		ASSERT_EQ(system(cmd), 0);
	}
	ASSERT_EQ(dc_signal(c, 1, SIGHUP), 0);
	ASSERT_EQ(dc_log_wait(c, 1,
			      "only [export] sections may change while running, and [group] chunk "
			      "= 16 blocks (running) / [group] chunk = 32 blocks (file)",
			      DT_EXIT_MS),
		  0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch2), 0);
	EXPECT_EQ(epoch2, epoch);

	// the control socket: modes, a foreign user, a malformed request
	ASSERT_EQ(dc_modes(c, 0, &dmode, &smode), 0);
	EXPECT_EQ(dmode, 0700u);
	EXPECT_EQ(smode, 0600u);
	if (geteuid() == 0) {
		ASSERT_EQ(dc_foreign(c, 0, false, resp, sizeof(resp)), 0);
		EXPECT_STREQ(resp, "connect: Permission denied");
		// cohortctl as another user says so
		EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out),
				 "setpriv --reuid=65534 --regid=65534 --clear-groups"),
			  1);
		EXPECT_NE(strstr(out, "permission denied (cohortctl must run as root)"), nullptr)
		    << out;
		ASSERT_EQ(dc_foreign(c, 0, true, resp, sizeof(resp)), 0);
		EXPECT_NE(strstr(resp, "permission denied: only root may use this socket"), nullptr)
		    << resp;
	}
	ASSERT_EQ(dc_raw(c, 0, "{bad\n", 5, resp, sizeof(resp)), 0);
	EXPECT_NE(strstr(resp, "\"ok\":false"), nullptr) << resp;
	EXPECT_NE(strstr(resp, "malformed request"), nullptr) << resp;
	ASSERT_EQ(dc_raw(c, 0, "[1,2]\n", 6, resp, sizeof(resp)), 0);
	EXPECT_NE(strstr(resp, "want an object with a string \\\"cmd\\\""), nullptr) << resp;
	ASSERT_EQ(dc_raw(c, 0, "{\"cmd\":\"format\"}\n", 17, resp, sizeof(resp)), 0);
	EXPECT_NE(strstr(resp, "unknown command"), nullptr) << resp;
	{
		std::string big(DAEMON_CTL_MSG_MAX + 100, ' ');

		ASSERT_EQ(dc_raw(c, 0, big.data(), big.size(), resp, sizeof(resp)), 0);
		EXPECT_NE(strstr(resp, "longer than 4096 bytes"), nullptr) << resp;
	}
	EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out)), 0) << out; // still serving

	// cohortctl stop: an ordered stop; every daemon exits 0
	EXPECT_EQ(dc_ctl(c, 1, "stop", out, sizeof(out)), 0) << out;
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(dc_wait_exit(c, i, DT_EXIT_MS, &st), 0) << "node " << i;
		EXPECT_TRUE(WIFEXITED(st)) << "node " << i;
		EXPECT_EQ(WEXITSTATUS(st), 0) << "node " << i;
	}
	// no daemon: a clear error
	EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out)), 1);
	EXPECT_NE(strstr(out, "no daemon at"), nullptr) << out;
	dc_delete(&c);
}

TEST(daemon, wrong_secret__refused_on_both_sides)
{
	struct dc_cluster *c = nullptr;
	char path[256], cmd[1200], out[8192];
	uint32_t epoch = 0, epoch2 = 0;
	int st = -1;

	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_DAEMON_EXAMPLE, 3, &c), 0);
	ASSERT_EQ(dc_start(c, 0), 0);
	ASSERT_EQ(dc_start(c, 1), 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch), 0);

	// node 2 with another cluster's secret (the same length and mode), and a short open bound
	dc_conf_path(c, 2, path, sizeof(path));
	snprintf(cmd, sizeof(cmd),
		 "head -c 32 /dev/urandom > '%s/other-secret' && chmod 0600 '%s/other-secret' && "
		 "sed -i -e 's|^secret = .*|secret = %s/other-secret|' "
		 "-e 's|^timeout_ms = 2000|timeout_ms = 2000\\nopen_timeout_ms = 4000|' '%s'",
		 dc_dir(c), dc_dir(c), dc_dir(c), path);
	ASSERT_EQ(system(cmd), 0) << cmd;
	ASSERT_EQ(dc_start(c, 2), 0);
	// it cannot join: it gives up opening and exits 1, saying why
	ASSERT_EQ(dc_wait_exit(c, 2, DT_EXIT_MS, &st), 0);
	EXPECT_TRUE(WIFEXITED(st));
	EXPECT_EQ(WEXITSTATUS(st), 1);
	EXPECT_EQ(dc_log_wait(c, 2, "does not prove this cluster's secret", 1000), 0);
	// and the members refused it too, and kept their view
	EXPECT_TRUE(dc_log_wait(c, 0, "refused node 2: it does not prove this cluster's secret",
				1000) == 0 ||
		    dc_log_wait(c, 1, "refused node 2: it does not prove this cluster's secret",
				1000) == 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch2), 0);
	EXPECT_EQ(epoch2, epoch) << "a node without the secret changed the view";
	EXPECT_EQ(dc_ctl(c, 0, "status", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "2 of 3 members, quorum yes"), nullptr) << out;

	// with the cluster's secret it joins
	snprintf(cmd, sizeof(cmd), "sed -i -e 's|^secret = .*|secret = %s/secret|' '%s'", dc_dir(c),
		 path);
	ASSERT_EQ(system(cmd), 0) << cmd;
	ASSERT_EQ(dc_start(c, 2), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch2), 0);
	EXPECT_GT(epoch2, epoch);
	EXPECT_EQ(dc_ctl(c, 1, "stop", out, sizeof(out)), 0) << out;
	for (uint32_t i = 0; i < 3; i++)
		EXPECT_EQ(dc_wait_exit(c, i, DT_EXIT_MS, &st), 0) << "node " << i;
	dc_delete(&c);
}

// fence = agent: a node paused past the failure detector is fenced by the configured command
// (here: it kills the paused daemon by its pid), with COHORT_FENCE_NODE and COHORT_FENCE_CLUSTER
// set, and the survivors go on without outwaiting its lease. When the agent fails, the survivors
// say so, outwait the lease instead, and the paused node, resumed, finds itself excluded and
// exits 3 for its supervisor.
TEST(daemon, fence_agent__fences_a_paused_node_or_the_lease_does)
{
	struct dc_cluster *c = nullptr;
	char path[256], cmd[1600], out[8192];
	uint32_t epoch = 0, i;
	int st = -1;
	FILE *f;

	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_DAEMON_EXAMPLE, 3, &c), 0);
	// The agent: fail while agent-fail exists; else kill the node's daemon (already gone is
	// fenced too: every survivor may run it for the same node).
	snprintf(path, sizeof(path), "%s/agent.sh", dc_dir(c));
	f = fopen(path, "we");
	ASSERT_NE(f, nullptr);
	fprintf(f,
		"d='%s'\n"
		"echo \"$COHORT_FENCE_CLUSTER $COHORT_FENCE_NODE\" >> \"$d/fenced\"\n"
		"[ -e \"$d/agent-fail\" ] && exit 5\n"
		"pid=$(cat \"$d/pid.$COHORT_FENCE_NODE\") || exit 6\n"
		"kill -KILL \"$pid\" 2>/dev/null || ! kill -0 \"$pid\" 2>/dev/null\n",
		dc_dir(c));
	ASSERT_EQ(fclose(f), 0);
	for (i = 0; i < 3; i++) {
		dc_conf_path(c, i, path, sizeof(path));
		snprintf(cmd, sizeof(cmd),
			 "sed -i -e 's|^timeout_ms = 2000|timeout_ms = 2000\\nfence = agent\\n"
			 "fence_agent = sh %s/agent.sh|' '%s'",
			 dc_dir(c), path);
		ASSERT_EQ(system(cmd), 0) << cmd;
	}
	auto start = [&](uint32_t n) {
		char pf[300];
		FILE *pfile;

		ASSERT_EQ(dc_start(c, n), 0);
		snprintf(pf, sizeof(pf), "%s/pid.%u", dc_dir(c), n);
		pfile = fopen(pf, "we");
		ASSERT_NE(pfile, nullptr);
		fprintf(pfile, "%d\n", dc_pid(c, n));
		ASSERT_EQ(fclose(pfile), 0);
	};
	for (i = 0; i < 3; i++)
		start(i);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);

	// node 2 paused: the agent kills it, and the others serve without it
	ASSERT_EQ(dc_signal(c, 2, SIGSTOP), 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch), 0);
	ASSERT_EQ(dc_wait_exit(c, 2, DT_EXIT_MS, &st), 0);
	EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
	EXPECT_TRUE(dc_log_wait(c, 0, "node 2: fenced (the agent exited 0)", 1000) == 0 ||
		    dc_log_wait(c, 1, "node 2: fenced (the agent exited 0)", 1000) == 0);
	snprintf(cmd, sizeof(cmd), "grep -qx 'demo 2' '%s/fenced'", dc_dir(c));
	EXPECT_EQ(system(cmd), 0) << "the agent was not told the node and the cluster";
	EXPECT_TRUE((dc_ctl(c, 0, "--json stats", out, sizeof(out)) == 0 &&
		     strstr(out, "\"fence_agent_fenced\": 1")) ||
		    (dc_ctl(c, 1, "--json stats", out, sizeof(out)) == 0 &&
		     strstr(out, "\"fence_agent_fenced\": 1")))
	    << out;

	// it restarts and rejoins
	start(2);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);

	// the agent fails: the lease is outwaited, and node 1, resumed, was excluded: exit 3
	snprintf(path, sizeof(path), "%s/agent-fail", dc_dir(c));
	f = fopen(path, "we");
	ASSERT_NE(f, nullptr);
	ASSERT_EQ(fclose(f), 0);
	ASSERT_EQ(dc_signal(c, 1, SIGSTOP), 0);
	ASSERT_EQ(dc_wait_view(c, 5, 2, DT_VIEW_MS, &epoch), 0);
	EXPECT_TRUE(dc_log_wait(c, 0, "node 1: the agent failed (exit 5)", 1000) == 0 ||
		    dc_log_wait(c, 2, "node 1: the agent failed (exit 5)", 1000) == 0);
	EXPECT_TRUE(dc_log_wait(c, 0, "outwaiting its lease instead", 1000) == 0 ||
		    dc_log_wait(c, 2, "outwaiting its lease instead", 1000) == 0);
	ASSERT_EQ(dc_signal(c, 1, SIGCONT), 0);
	ASSERT_EQ(dc_wait_exit(c, 1, DT_EXIT_MS, &st), 0);
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 3) << st;
	EXPECT_TRUE(
	    (dc_ctl(c, 0, "stats", out, sizeof(out)) == 0 && strstr(out, "failed 1 times")) ||
	    (dc_ctl(c, 2, "stats", out, sizeof(out)) == 0 && strstr(out, "failed 1 times")))
	    << out;

	EXPECT_EQ(dc_ctl(c, 0, "stop", out, sizeof(out)), 0) << out;
	EXPECT_EQ(dc_wait_exit(c, 0, DT_EXIT_MS, &st), 0);
	EXPECT_EQ(dc_wait_exit(c, 2, DT_EXIT_MS, &st), 0);
	dc_delete(&c);
}

TEST(daemon, check__prints_or_refuses)
{
	struct dc_cluster *c = nullptr;
	char path[256], cmd[1024], out[8192];
	size_t n;
	FILE *p;

	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_DAEMON_EXAMPLE, 3, &c), 0);
	dc_conf_path(c, 0, path, sizeof(path));
	snprintf(cmd, sizeof(cmd), "'%s/cohortd' -c '%s' --node 2 --check 2>&1", COHORT_BIN_DIR,
		 path);
	p = popen(cmd, "r");
	ASSERT_NE(p, nullptr);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	EXPECT_EQ(pclose(p), 0) << out;
	EXPECT_NE(strstr(out, "[cluster] node = 2\n"), nullptr) << out;
	EXPECT_NE(strstr(out, "[daemon] frontend = none\n"), nullptr) << out;
	EXPECT_NE(strstr(out, "[volume vol1] first_block = 4096, blocks = 2048, id = "), nullptr)
	    << out;
	ASSERT_EQ(dc_append_conf(c, 0, "[volume big]\nsize = 1T\n"), 0);
	p = popen(cmd, "r");
	ASSERT_NE(p, nullptr);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	EXPECT_EQ(WEXITSTATUS(pclose(p)), 1) << out;
	EXPECT_NE(strstr(out, "cohortd: "), nullptr) << out;
	EXPECT_NE(strstr(out, "[volume big] size: 268435456 blocks do not fit"), nullptr) << out;
	dc_delete(&c);
}

} // namespace

// map_of - `cohortctl --json map` of @node, parsed (nullptr on any failure).
static json_t *map_of(struct dc_cluster *c, uint32_t node)
{
	char out[16384];

	if (dc_ctl(c, node, "--json map", out, sizeof(out)) != 0)
		return nullptr;
	return json_loads(out, 0, nullptr);
}

// members_of - group @g's members in @map as a mask.
static uint32_t members_of(json_t *map, size_t g)
{
	json_t *m = json_object_get(json_array_get(json_object_get(map, "groups"), g), "members");
	uint32_t mask = 0;
	json_t *x;
	size_t i;

	json_array_foreach(m, i, x) mask |= 1u << json_integer_value(x);
	return mask;
}

// A routed config (docs/examples/cohort-routed-shm.conf): group ga cabled to nodes 0-1, gb to
// 1-2, a virtual volume striped over both. Every daemon opens both groups' engines (each on its
// own fabric) and a router, and shows the same mapping table, with the groups it is an AMF of;
// a node's death leaves both groups' clusters a view of the other two; started again, it rejoins
// both and every forwarder connects to it again; an ordered stop stops both groups' clusters and
// ends every daemon. (The I/O through the router, forwarded and split,
// is scripts/rig-route.sh, through LIO in the VM rig.)
TEST(daemon, routed__two_groups_one_table_a_death_and_a_stop)
{
	struct dc_cluster *c = nullptr;
	json_t *map[3] = {};
	char out[16384];
	uint32_t epoch = 0, i, t;
	int st = -1;

	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_ROUTED_EXAMPLE, 3, &c), 0);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(dc_start(c, i), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	for (i = 0; i < 3; i++) {
		json_t *g;

		map[i] = map_of(c, i);
		ASSERT_NE(map[i], nullptr) << "node " << i;
		EXPECT_EQ(json_integer_value(json_object_get(map[i], "version")), 1);
		EXPECT_EQ(json_integer_value(json_object_get(map[i], "node")), (json_int_t)i);
		g = json_object_get(map[i], "groups");
		ASSERT_EQ(json_array_size(g), 2u);
		EXPECT_STREQ(json_string_value(json_object_get(json_array_get(g, 0), "name")),
			     "ga");
		EXPECT_EQ(json_is_true(json_object_get(json_array_get(g, 0), "amf_here")), i <= 1)
		    << "node " << i;
		EXPECT_EQ(json_is_true(json_object_get(json_array_get(g, 1), "amf_here")), i >= 1)
		    << "node " << i;
		EXPECT_EQ(members_of(map[i], 0), 7u) << "node " << i;
		EXPECT_EQ(members_of(map[i], 1), 7u) << "node " << i;
		// one table on every node: the same volumes, ids and layout
		EXPECT_TRUE(json_equal(json_object_get(map[i], "volumes"),
				       json_object_get(map[0], "volumes")))
		    << "node " << i;
	}
	{
		json_t *vs = json_array_get(json_object_get(map[0], "volumes"), 4);

		EXPECT_STREQ(json_string_value(json_object_get(vs, "name")), "vs");
		EXPECT_STREQ(json_string_value(json_object_get(vs, "layout")), "stripe");
		EXPECT_EQ(json_integer_value(json_object_get(vs, "blocks")), 8192);
		EXPECT_EQ(json_array_size(json_object_get(vs, "components")), 2u);
	}
	for (i = 0; i < 3; i++)
		json_decref(map[i]);
	EXPECT_EQ(dc_ctl(c, 1, "map", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "stripe (16 blocks) over sa,sb"), nullptr) << out;
	EXPECT_NE(strstr(out, "group gb from block 2048"), nullptr) << out;
	EXPECT_NE(strstr(out, "routed here: 0 local, 0 forwarded"), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 1, "volumes", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "vs"), nullptr) << out;
	// status shows every group's cluster, not only the first's
	EXPECT_EQ(dc_ctl(c, 1, "status", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "GROUP"), nullptr) << out;
	EXPECT_NE(strstr(out, "  gb "), nullptr) << out;

	// SIGKILL node 2 (gb's preferred AMF): both groups' clusters go on with nodes 0 and 1
	ASSERT_EQ(dc_signal(c, 2, SIGKILL), 0);
	ASSERT_EQ(dc_wait_view(c, 3, 2, DT_VIEW_MS, &epoch), 0);
	for (t = 0; t < 600; t++) { // group gb's view, bounded (60 s)
		json_t *m = map_of(c, 0);
		bool done = m && members_of(m, 1) == 3u;

		json_decref(m);
		if (done)
			break;
		usleep(100000);
	}
	EXPECT_LT(t, 600u) << "group gb's view never lost node 2";
	{
		json_t *s = nullptr;

		ASSERT_EQ(dc_ctl(c, 0, "--json status", out, sizeof(out)), 0) << out;
		s = json_loads(out, 0, nullptr);
		ASSERT_NE(s, nullptr) << out;
		ASSERT_EQ(json_array_size(json_object_get(s, "groups")), 2u) << out;
		EXPECT_EQ(members_of(s, 0), 3u) << out;
		EXPECT_EQ(members_of(s, 1), 3u) << out;
		EXPECT_STREQ(json_string_value(json_object_get(
				 json_array_get(json_object_get(s, "groups"), 1), "name")),
			     "gb");
		EXPECT_TRUE(json_is_true(
		    json_object_get(json_array_get(json_object_get(s, "groups"), 1), "quorum")))
		    << out;
		json_decref(s);
	}

	// node 2 starts again: it rejoins both groups, and the forwarders connect to it again
	ASSERT_EQ(dc_start(c, 2), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	for (t = 0; t < 600; t++) { // bounded (60 s)
		json_t *m0 = map_of(c, 0), *m2 = map_of(c, 2);
		bool done = m0 && m2 && members_of(m0, 1) == 7u &&
			    json_array_size(json_object_get(json_object_get(m0, "forwarder"),
							    "connected")) == 2 &&
			    json_array_size(json_object_get(json_object_get(m2, "forwarder"),
							    "connected")) == 2;

		json_decref(m0);
		json_decref(m2);
		if (done)
			break;
		usleep(100000);
	}
	EXPECT_LT(t, 600u) << "the forwarders did not connect to node 2 again";
	EXPECT_EQ(dc_ctl(c, 0, "map", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "forwarder: connected to 1,2;"), nullptr) << out;

	// cohortctl stop: both groups' clusters stop; every daemon exits 0
	EXPECT_EQ(dc_ctl(c, 1, "stop", out, sizeof(out)), 0) << out;
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(dc_wait_exit(c, i, DT_EXIT_MS, &st), 0) << "node " << i;
		EXPECT_TRUE(WIFEXITED(st)) << "node " << i;
		EXPECT_EQ(WEXITSTATUS(st), 0) << "node " << i;
	}
	EXPECT_EQ(dc_log_wait(c, 0, "route: router up: 2 groups, 5 volumes", 1000), 0);
	dc_delete(&c);
}

// volume_of - the volume named @name in @map, or nullptr.
static json_t *volume_of(json_t *map, const char *name)
{
	json_t *v;
	size_t i;

	json_array_foreach(
	    json_object_get(map, "volumes"), i,
	    v) if (!strcmp(json_string_value(json_object_get(v, "name")), name)) return v;
	return nullptr;
}

// expect_tables - every node's table is @first's version with its volumes.
static void expect_tables(struct dc_cluster *c, json_t *first)
{
	for (uint32_t i = 0; i < 3; i++) {
		json_t *m = map_of(c, i);

		ASSERT_NE(m, nullptr) << "node " << i;
		EXPECT_EQ(json_integer_value(json_object_get(m, "version")),
			  json_integer_value(json_object_get(first, "version")))
		    << "node " << i;
		EXPECT_TRUE(
		    json_equal(json_object_get(m, "volumes"), json_object_get(first, "volumes")))
		    << "node " << i;
		json_decref(m);
	}
}

// wait_version - until `cohortctl --json map` of @node says @version (bounded: 60 s).
static bool wait_version(struct dc_cluster *c, uint32_t node, json_int_t version)
{
	for (int t = 0; t < 600; t++) {
		json_t *m = map_of(c, node);
		bool done = m && json_integer_value(json_object_get(m, "version")) == version;

		json_decref(m);
		if (done)
			return true;
		usleep(100000);
	}
	return false;
}

// The mapping table changed online through cohortctl (router.h coh_route_map_change): a volume
// added through node 2 (the configuration controller is node 0: the change goes there), grown;
// what may not be done is refused with why; every node has the same table. The table outlives
// an ordered stop of the whole cluster and a start (each node's routing.map), and the role of
// configuration controller moves to node 1 when node 0 is killed: a change through node 2 is
// made there, and node 0, started again, gets it.
TEST(daemon, routed__the_table_changes_online_and_is_kept)
{
	struct dc_cluster *c = nullptr;
	char out[16384];
	uint32_t epoch = 0, i;
	int st = -1;

	ASSERT_EQ(dc_new(COHORT_BIN_DIR, COHORT_ROUTED_EXAMPLE, 3, &c), 0);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(dc_start(c, i), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	// gb holds lb (blocks 0-2047) and sb (2048-6143) of its 8192
	EXPECT_EQ(dc_ctl(c, 2, "map add nv gb 6144 512", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "table version 2 on the cluster"), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 1, "map grow nv 1024", out, sizeof(out)), 0) << out;
	EXPECT_NE(dc_ctl(c, 1, "map add nv gb 7000 16", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "volume nv: exists"), nullptr) << out;
	EXPECT_NE(dc_ctl(c, 1, "map add nw gb 6000 512", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "overlap"), nullptr) << out;
	EXPECT_NE(dc_ctl(c, 0, "map grow sb 8000", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "component"), nullptr) << out;
	EXPECT_NE(dc_ctl(c, 0, "map remove sa", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "a component of virtual volume vs"), nullptr) << out;
	EXPECT_NE(dc_ctl(c, 0, "map add nx gz 0 16", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "no group \"gz\""), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 0, "map frob", out, sizeof(out)), 2) << out;
	json_t *first = map_of(c, 0);
	ASSERT_NE(first, nullptr);
	EXPECT_EQ(json_integer_value(json_object_get(first, "version")), 3);
	ASSERT_NE(volume_of(first, "nv"), nullptr);
	EXPECT_EQ(json_integer_value(json_object_get(volume_of(first, "nv"), "blocks")), 1024);
	expect_tables(c, first);
	// cohortctl volumes lists the live table, not the config's volumes
	EXPECT_EQ(dc_ctl(c, 2, "volumes", out, sizeof(out)), 0) << out;
	EXPECT_TRUE(std::regex_search(out, std::regex("\nnv +[0-9a-f]{32} +logical +gb +6144 +1024 "
						      "+4194304\n")))
	    << out;
	EXPECT_NE(strstr(out, "(6 volumes; block size 4096; mapping table version 3 over 2 groups"),
		  nullptr)
	    << out;

	// the whole cluster stops and starts: the table is the kept one, not the config's
	EXPECT_EQ(dc_ctl(c, 1, "stop", out, sizeof(out)), 0) << out;
	for (i = 0; i < 3; i++)
		ASSERT_EQ(dc_wait_exit(c, i, DT_EXIT_MS, &st), 0) << "node " << i;
	for (i = 0; i < 3; i++)
		ASSERT_EQ(dc_start(c, i), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	expect_tables(c, first);
	json_decref(first);

	// node 0, the configuration controller, killed: node 1 takes the role over
	ASSERT_EQ(dc_signal(c, 0, SIGKILL), 0);
	for (i = 0; i < 600; i++) { // until node 2's forwarder sees node 0 gone, bounded (60 s)
		json_t *m = map_of(c, 2);
		bool gone = m && json_array_size(json_object_get(json_object_get(m, "forwarder"),
								 "connected")) == 1;

		json_decref(m);
		if (gone)
			break;
		usleep(100000);
	}
	ASSERT_LT(i, 600u) << "node 2 still connected to node 0";
	EXPECT_EQ(dc_ctl(c, 2, "map remove nv", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "table version 4 on the cluster"), nullptr) << out;
	EXPECT_TRUE(wait_version(c, 1, 4));
	// node 0 starts again from its kept version 3 and is given version 4
	ASSERT_EQ(dc_start(c, 0), 0);
	ASSERT_EQ(dc_wait_view(c, 7, 3, DT_VIEW_MS, &epoch), 0);
	EXPECT_TRUE(wait_version(c, 0, 4));
	json_t *m0 = map_of(c, 0);
	EXPECT_TRUE(m0 && !volume_of(m0, "nv"));
	json_decref(m0);
	EXPECT_EQ(dc_log_wait(c, 2, "route: map remove nv: table version 4", 1000), 0);
	// A virtual volume made online over a logical volume made online; another over the same
	// component is refused, and so is the component's removal; a malformed one is a usage
	// error.
	EXPECT_EQ(dc_ctl(c, 2, "map add lv gb 6144 512", out, sizeof(out)), 0) << out;
	EXPECT_TRUE(wait_version(c, 1, 5));
	EXPECT_EQ(dc_ctl(c, 1, "map add-virtual vv concat lv", out, sizeof(out)), 0) << out;
	EXPECT_NE(strstr(out, "table version 6 on the cluster"), nullptr) << out;
	EXPECT_TRUE(wait_version(c, 0, 6));
	EXPECT_NE(dc_ctl(c, 0, "map add-virtual vw stripe 8 lv,la", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "lv is a component of virtual volume vw too"), nullptr) << out;
	EXPECT_NE(dc_ctl(c, 0, "map remove lv", out, sizeof(out)), 0);
	EXPECT_NE(strstr(out, "a component of virtual volume vv"), nullptr) << out;
	EXPECT_EQ(dc_ctl(c, 2, "map add-virtual vx mirror lv", out, sizeof(out)), 2) << out;
	EXPECT_EQ(dc_ctl(c, 0, "volumes", out, sizeof(out)), 0) << out;
	EXPECT_TRUE(std::regex_search(out, std::regex("\nvv +[0-9a-f]{32} +virtual +- +0 +512 "
						      "+2097152\n")))
	    << out;

	EXPECT_EQ(dc_ctl(c, 1, "stop", out, sizeof(out)), 0) << out;
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(dc_wait_exit(c, i, DT_EXIT_MS, &st), 0) << "node " << i;
		EXPECT_TRUE(WIFEXITED(st)) << "node " << i;
	}
	dc_delete(&c);
}
