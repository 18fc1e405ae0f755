// route_test.cc - the routing module (engine/route/, include/cohort/route.h) through its C API:
// the mapping table's checks, on-disk form and two-slot file; the choice of a target controller;
// the split of commands into component commands against a block-by-block reference; the
// aggregate status; and the coordination table of conflict detection, alone and under threads
// whose writes span two elements (a checker fails on any write seen partly applied). Random
// ranges come from fixed seeds; every loop and wait is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cohort/route.h"

namespace
{
void set_name(char *dst, const char *s)
{
	snprintf(dst, COH_MAP_NAME_MAX + 1, "%s", s);
}

uint32_t add_group(coh_map &m, const char *name, uint32_t amfs, uint32_t preferred, uint64_t blocks)
{
	coh_map_group &g = m.groups[m.ngroups];

	set_name(g.name, name);
	g.amfs = amfs;
	g.preferred = preferred;
	g.blocks = blocks;
	return m.ngroups++;
}

uint32_t add_logical(coh_map &m, const char *name, uint32_t group, uint64_t first, uint64_t blocks)
{
	coh_map_volume &v = m.volumes[m.nvolumes];

	set_name(v.name, name);
	v.id[0] = 0xc0;
	v.id[15] = (uint8_t)(m.nvolumes + 1);
	v.kind = COH_MAP_LOGICAL;
	v.group = group;
	v.first_block = first;
	v.blocks = blocks;
	return m.nvolumes++;
}

uint32_t add_virtual(coh_map &m, const char *name, uint32_t layout, uint32_t stripe,
		     std::vector<uint32_t> comps)
{
	coh_map_volume &v = m.volumes[m.nvolumes];

	set_name(v.name, name);
	v.id[0] = 0xd0;
	v.id[15] = (uint8_t)(m.nvolumes + 1);
	v.kind = COH_MAP_VIRTUAL;
	v.layout = layout;
	v.stripe_blocks = stripe;
	v.ncomp = (uint32_t)comps.size();
	for (size_t i = 0; i < comps.size(); i++) {
		v.comp[i] = comps[i];
		v.blocks += m.volumes[comps[i]].blocks;
	}
	return m.nvolumes++;
}

// The shape: three controllers, group A cabled to nodes 0-1, group B to nodes 1-2; a
// logical volume on each (and a third on B, a fourth on A), a virtual volume striped over A and
// B, and one concatenating A's second and B's second volume (a logical volume is in one virtual
// volume at most).
struct two_groups {
	coh_map m;
	uint32_t ga, gb, la, lb, lc, lf, vs, vc;

	two_groups()
	{
		memset(&m, 0, sizeof(m));
		m.version = 1;
		m.nodes = 3;
		m.block_size = 4096;
		ga = add_group(m, "ga", 0x3, 0, 1000);
		gb = add_group(m, "gb", 0x6, 2, 1000);
		la = add_logical(m, "la", ga, 0, 256);
		lb = add_logical(m, "lb", gb, 100, 256);
		lc = add_logical(m, "lc", gb, 500, 96);
		lf = add_logical(m, "lf", ga, 600, 256);
		vs = add_virtual(m, "vs", COH_MAP_STRIPE, 16, { la, lb });
		vc = add_virtual(m, "vc", COH_MAP_CONCAT, 0, { lf, lc });
	}
};

std::string check_err(const coh_map &m, int *ret)
{
	char err[256] = "";

	*ret = coh_map_check(&m, err, sizeof(err));
	return err;
}

TEST(map, a_valid_table_passes_and_round_trips)
{
	two_groups t;
	std::vector<uint8_t> buf(COH_MAP_ENCODED_MAX);
	coh_map back;
	size_t used = 0;
	char err[256] = "";

	ASSERT_EQ(coh_map_check(&t.m, err, sizeof(err)), 0) << err;
	EXPECT_EQ(t.m.volumes[t.vs].blocks, 512u);
	EXPECT_EQ(coh_map_find(&t.m, "vc"), (int)t.vc);
	EXPECT_EQ(coh_map_find(&t.m, "nope"), -ENOENT);
	ASSERT_EQ(coh_map_encode(&t.m, buf.data(), buf.size(), &used), 0);
	EXPECT_EQ(used, 64u + 2 * 64u + 6 * 128u);
	EXPECT_EQ(coh_map_encode(&t.m, buf.data(), used - 1, nullptr), -ENOSPC);
	ASSERT_EQ(coh_map_decode(buf.data(), used, &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(memcmp(&back, &t.m, sizeof(back)), 0);
}

TEST(map, each_bad_field_is_refused_with_what_is_wrong)
{
	struct bad {
		const char *what;
		void (*mutate)(two_groups &);
		const char *says;
	};
	const bad cases[] = {
		{ "version 0", [](two_groups &t) { t.m.version = 0; }, "version 0" },
		{ "no nodes", [](two_groups &t) { t.m.nodes = 0; }, "controllers" },
		{ "block size", [](two_groups &t) { t.m.block_size = 1000; }, "block size" },
		{ "no AMF", [](two_groups &t) { t.m.groups[0].amfs = 0; }, "group ga: AMFs" },
		{ "AMF past the cluster", [](two_groups &t) { t.m.groups[1].amfs = 0x9; },
		  "group gb: AMFs" },
		{ "preferred not an AMF", [](two_groups &t) { t.m.groups[1].preferred = 0; },
		  "group gb: preferred" },
		{ "group named twice", [](two_groups &t) { set_name(t.m.groups[1].name, "ga"); },
		  "group ga: named twice" },
		{ "group name blank", [](two_groups &t) { set_name(t.m.groups[1].name, "g b"); },
		  "group 1: bad name" },
		{ "volume past its group",
		  [](two_groups &t) { t.m.volumes[t.lc].first_block = 950; },
		  "volume lc: blocks 950" },
		{ "volumes overlap", [](two_groups &t) { t.m.volumes[t.lc].first_block = 300; },
		  "volume lc overlaps volume lb" },
		{ "unknown group", [](two_groups &t) { t.m.volumes[t.la].group = 7; },
		  "volume la: group 7" },
		{ "id zero",
		  [](two_groups &t) { memset(t.m.volumes[t.lb].id, 0, COH_MAP_ID_BYTES); },
		  "volume lb: id all zero" },
		{ "id twice",
		  [](two_groups &t) {
			  memcpy(t.m.volumes[t.lb].id, t.m.volumes[t.la].id, COH_MAP_ID_BYTES);
		  },
		  "same id" },
		{ "kind", [](two_groups &t) { t.m.volumes[t.la].kind = 9; }, "volume la: kind 9" },
		{ "component twice", [](two_groups &t) { t.m.volumes[t.vc].comp[1] = t.lf; },
		  "component lf twice" },
		{ "component of two virtual volumes",
		  [](two_groups &t) { t.m.volumes[t.vc].comp[0] = t.la; },
		  "volume vs: la is a component of virtual volume vc too" },
		{ "virtual over virtual", [](two_groups &t) { t.m.volumes[t.vc].comp[1] = t.vs; },
		  "not a logical volume" },
		{ "stripe of unequal sizes",
		  [](two_groups &t) {
			  t.m.volumes[t.vs].comp[1] = t.lc;
			  t.m.volumes[t.vs].blocks = 352;
			  t.m.volumes[t.vc].comp[1] = t.lb;
			  t.m.volumes[t.vc].blocks = 512;
		  },
		  "same size" },
		{ "stripe 0", [](two_groups &t) { t.m.volumes[t.vs].stripe_blocks = 0; },
		  "layout" },
		{ "wrong size", [](two_groups &t) { t.m.volumes[t.vc].blocks++; },
		  "its components" },
		{ "no components", [](two_groups &t) { t.m.volumes[t.vc].ncomp = 0; },
		  "components" },
		{ "logical with components", [](two_groups &t) { t.m.volumes[t.la].ncomp = 1; },
		  "no layout" },
	};

	for (const bad &b : cases) {
		two_groups t;
		std::vector<uint8_t> buf(COH_MAP_ENCODED_MAX);
		int ret;

		b.mutate(t);
		std::string e = check_err(t.m, &ret);
		EXPECT_EQ(ret, -EINVAL) << b.what;
		EXPECT_NE(e.find(b.says), std::string::npos) << b.what << ": " << e;
		EXPECT_EQ(coh_map_encode(&t.m, buf.data(), buf.size(), nullptr), -EINVAL) << b.what;
	}
}

TEST(map, a_torn_or_corrupt_table_is_refused_never_read_as_another)
{
	two_groups t;
	std::vector<uint8_t> buf(COH_MAP_ENCODED_MAX), copy;
	coh_map back;
	size_t used;
	char err[256];

	ASSERT_EQ(coh_map_encode(&t.m, buf.data(), buf.size(), &used), 0);
	// Any one byte changed, anywhere in the table.
	for (size_t i = 0; i < used; i++) {
		copy = buf;
		copy[i] ^= 0x20;
		EXPECT_EQ(coh_map_decode(copy.data(), used, &back, err, sizeof(err)), -EBADMSG)
		    << "byte " << i;
	}
	// Cut short at every length: a write torn at any byte.
	for (size_t len = 1; len < used; len++)
		EXPECT_EQ(coh_map_decode(buf.data(), len, &back, err, sizeof(err)), -EBADMSG)
		    << "length " << len;
	// The second half is still the old table's (zero here): torn between sectors.
	copy = buf;
	memset(copy.data() + used / 2, 0, used - used / 2);
	EXPECT_EQ(coh_map_decode(copy.data(), used, &back, err, sizeof(err)), -EBADMSG);
	std::vector<uint8_t> zero(used);
	EXPECT_EQ(coh_map_decode(zero.data(), used, &back, err, sizeof(err)), -ENODATA);
	EXPECT_EQ(coh_map_decode(nullptr, 0, &back, err, sizeof(err)), -EBADMSG);
}

// The acceptor's state of a table change (router.c's Paxos): it round-trips, and a torn or
// corrupt one is refused, never read as "nothing promised" (a controller that forgot a promise
// could let two tables of one version be chosen).
TEST(map, the_acceptors_state_round_trips_and_a_torn_one_is_refused)
{
	two_groups t;
	std::vector<uint8_t> buf(COH_MAP_ACCEPT_ENCODED_MAX), copy;
	coh_map_accept a = {}, back;
	size_t used;
	char err[256];

	a.version = t.m.version;
	a.promised = 0x502;
	a.ballot = 0x401;
	a.map = t.m;
	ASSERT_EQ(coh_map_accept_encode(&a, buf.data(), buf.size(), &used), 0);
	ASSERT_EQ(coh_map_accept_decode(buf.data(), used, &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.version, a.version);
	EXPECT_EQ(back.promised, a.promised);
	EXPECT_EQ(back.ballot, a.ballot);
	EXPECT_EQ(back.map.nvolumes, t.m.nvolumes);
	for (size_t i = 0; i < used; i++) {
		copy = buf;
		copy[i] ^= 0x10;
		EXPECT_NE(coh_map_accept_decode(copy.data(), used, &back, err, sizeof(err)), 0)
		    << "byte " << i;
	}
	for (size_t len = 0; len < used; len++)
		EXPECT_NE(coh_map_accept_decode(buf.data(), len, &back, err, sizeof(err)), 0)
		    << "length " << len;
	// A promise alone (nothing accepted yet).
	a.ballot = 0;
	ASSERT_EQ(coh_map_accept_encode(&a, buf.data(), buf.size(), &used), 0);
	EXPECT_EQ(used, 64u);
	ASSERT_EQ(coh_map_accept_decode(buf.data(), used, &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.promised, 0x502u);
	EXPECT_EQ(back.ballot, 0u);
	// Bad states are not written: accepted above the promise, or of another version.
	a.ballot = 0x601;
	EXPECT_EQ(coh_map_accept_encode(&a, buf.data(), buf.size(), &used), -EINVAL);
	a.ballot = 0x401;
	a.version++;
	EXPECT_EQ(coh_map_accept_encode(&a, buf.data(), buf.size(), &used), -EINVAL);
	// The file: saved, loaded, missing, and corrupt (refused with its name).
	char tmpl[] = "/tmp/cohort-accept-XXXXXX";
	ASSERT_NE(mkdtemp(tmpl), nullptr);
	std::string path = std::string(tmpl) + "/map.accept";
	EXPECT_EQ(coh_map_accept_load(path.c_str(), &back, err, sizeof(err)), -ENOENT);
	a.version--;
	ASSERT_EQ(coh_map_accept_save(path.c_str(), &a, err, sizeof(err)), 0) << err;
	ASSERT_EQ(coh_map_accept_load(path.c_str(), &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.ballot, 0x401u);
	FILE *f = fopen(path.c_str(), "r+");
	ASSERT_NE(f, nullptr);
	fseek(f, 70, SEEK_SET);
	fputc(0x55, f);
	fclose(f);
	EXPECT_EQ(coh_map_accept_load(path.c_str(), &back, err, sizeof(err)), -EBADMSG);
	EXPECT_NE(strstr(err, "map.accept"), nullptr) << err;
	unlink(path.c_str());
	rmdir(tmpl);
}

// A file of its own in a fresh directory, removed at the end.
struct map_file {
	std::string dir, path;

	map_file()
	{
		char tmpl[] = "/tmp/cohort-route-XXXXXX";

		if (mkdtemp(tmpl))
			dir = tmpl;
		path = dir + "/map";
	}
	~map_file()
	{
		unlink(path.c_str());
		rmdir(dir.c_str());
	}
	// tear - overwrite @len bytes at @off with a pattern, as a torn write would leave them.
	void tear(off_t off, size_t len)
	{
		std::vector<uint8_t> junk(len, 0x5a);
		int fd = open(path.c_str(), O_WRONLY);

		ASSERT_GE(fd, 0);
		ASSERT_EQ(pwrite(fd, junk.data(), len, off), (ssize_t)len);
		close(fd);
	}
};

TEST(map, the_file_keeps_the_newest_table_across_a_torn_write)
{
	map_file f;
	two_groups t;
	coh_map back;
	char err[256] = "";

	ASSERT_FALSE(f.dir.empty());
	EXPECT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), -ENOENT);
	ASSERT_EQ(coh_map_save(f.path.c_str(), &t.m, err, sizeof(err)), 0) << err;
	ASSERT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.version, 1u);

	// Version 2 grows lc; it goes to the other slot.
	t.m.version = 2;
	t.m.volumes[t.lc].blocks = 128;
	t.m.volumes[t.vc].blocks += 32;
	ASSERT_EQ(coh_map_save(f.path.c_str(), &t.m, err, sizeof(err)), 0) << err;
	ASSERT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.version, 2u);
	EXPECT_EQ(back.volumes[t.lc].blocks, 128u);
	EXPECT_EQ(coh_map_save(f.path.c_str(), &t.m, err, sizeof(err)), -ESTALE);

	// Version 2's write torn (its slot is the second): the file still has version 1.
	f.tear(16384 + 200, 300);
	ASSERT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.version, 1u);
	EXPECT_EQ(back.volumes[t.lc].blocks, 96u);

	// Version 3 goes over the torn slot, not over version 1.
	t.m.version = 3;
	ASSERT_EQ(coh_map_save(f.path.c_str(), &t.m, err, sizeof(err)), 0) << err;
	f.tear(100, 8);
	ASSERT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), 0) << err;
	EXPECT_EQ(back.version, 3u);

	// Both slots bad: an error, never "no table".
	f.tear(16384 + 100, 8);
	EXPECT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), -EBADMSG);
	EXPECT_NE(std::string(err).find("no valid table"), std::string::npos) << err;
	ASSERT_EQ(truncate(f.path.c_str(), 0), 0);
	EXPECT_EQ(coh_map_load(f.path.c_str(), &back, err, sizeof(err)), -ENODATA);
}

// The online changes: each helper makes the next version or leaves the table as it was, and
// coh_map_compatible allows exactly what keeps every shared volume's blocks where they were.
TEST(map, online_changes_add_grow_remove_and_what_is_compatible)
{
	two_groups t;
	coh_map m = t.m, next;
	coh_map_volume v = {};
	char err[256] = "";

	set_name(v.name, "ld");
	v.id[0] = 0xe0;
	v.kind = COH_MAP_LOGICAL;
	v.group = t.ga;
	v.first_block = 300;
	v.blocks = 100;
	ASSERT_EQ(coh_map_add(&m, &v, err, sizeof(err)), 0) << err;
	EXPECT_EQ(m.version, 2u);
	EXPECT_EQ(coh_map_compatible(&t.m, &m, err, sizeof(err)), 0) << err;
	EXPECT_EQ(coh_map_find_id(&m, v.id, 0), (int)m.nvolumes - 1);
	// Refused, the table left as it was: a name or an id used, a range over another volume.
	next = m;
	EXPECT_EQ(coh_map_add(&next, &v, nullptr, 0), -EEXIST);
	set_name(v.name, "le");
	EXPECT_EQ(coh_map_add(&next, &v, err, sizeof(err)), -EINVAL);
	EXPECT_NE(std::string(err).find("the same id"), std::string::npos) << err;
	v.id[0] = 0xe1;
	v.first_block = 200;
	EXPECT_EQ(coh_map_add(&next, &v, err, sizeof(err)), -EINVAL) << err;
	EXPECT_EQ(memcmp(&next, &m, sizeof(m)), 0);
	// Grow: a logical volume alone; not a component, not smaller, not over its neighbour.
	EXPECT_EQ(coh_map_grow(&next, "ld", 150, err, sizeof(err)), 0) << err;
	EXPECT_EQ(next.version, 3u);
	EXPECT_EQ(coh_map_compatible(&m, &next, err, sizeof(err)), 0) << err;
	EXPECT_EQ(coh_map_grow(&next, "la", 300, nullptr, 0), -EBUSY);
	EXPECT_EQ(coh_map_grow(&next, "ld", 100, nullptr, 0), -EINVAL);
	EXPECT_EQ(coh_map_grow(&next, "ld", 800, nullptr, 0), -EINVAL);
	EXPECT_EQ(coh_map_grow(&next, "nope", 800, nullptr, 0), -ENOENT);
	// A virtual volume made online: over a free logical volume, not over another's component.
	{
		coh_map x = next, y = next;
		coh_map_volume w = {};

		set_name(w.name, "vd");
		w.id[0] = 0xe2;
		w.kind = COH_MAP_VIRTUAL;
		w.layout = COH_MAP_CONCAT;
		w.ncomp = 1;
		w.comp[0] = (uint32_t)coh_map_find(&x, "ld");
		w.blocks = x.volumes[w.comp[0]].blocks;
		ASSERT_EQ(coh_map_add(&x, &w, err, sizeof(err)), 0) << err;
		EXPECT_EQ(coh_map_compatible(&next, &x, err, sizeof(err)), 0) << err;
		set_name(w.name, "ve");
		w.id[0] = 0xe3;
		w.comp[0] = t.la;
		w.blocks = y.volumes[t.la].blocks;
		EXPECT_EQ(coh_map_add(&y, &w, err, sizeof(err)), -EINVAL);
		EXPECT_NE(std::string(err).find("la is a component of virtual volume ve too"),
			  std::string::npos)
		    << err;
		EXPECT_EQ(memcmp(&y, &next, sizeof(y)), 0);
	}
	// Remove: not a component; a virtual volume's removal moves the indexes after it, and its
	// components' indexes in the others follow.
	EXPECT_EQ(coh_map_remove(&next, "lc", nullptr, 0), -EBUSY);
	coh_map before = next;
	ASSERT_EQ(coh_map_remove(&next, "vs", err, sizeof(err)), 0) << err;
	EXPECT_EQ(coh_map_compatible(&before, &next, err, sizeof(err)), 0) << err;
	int vc = coh_map_find(&next, "vc");
	ASSERT_GE(vc, 0);
	EXPECT_EQ(memcmp(next.volumes[next.volumes[vc].comp[1]].id, t.m.volumes[t.lc].id,
			 COH_MAP_ID_BYTES),
		  0);
	ASSERT_EQ(coh_map_remove(&next, "vc", nullptr, 0), 0);
	ASSERT_EQ(coh_map_remove(&next, "lc", nullptr, 0), 0);
	EXPECT_EQ(coh_map_find(&next, "lc"), -ENOENT);
	// Not compatible: a moved, shrunk, renamed or re-laid volume, a group changed, or a
	// component grown (by editing the table directly).
	struct bad {
		const char *what;
		void (*edit)(coh_map &m, const two_groups &t);
	} bads[] = {
		{ "moved",
		  [](coh_map &x, const two_groups &y) { x.volumes[y.lb].first_block = 0; } },
		{ "shrunk",
		  [](coh_map &x, const two_groups &y) {
			  x.volumes[y.lc].blocks = 32;
			  x.volumes[y.vc].blocks -= 64;
		  } },
		{ "renamed",
		  [](coh_map &x, const two_groups &y) { set_name(x.volumes[y.la].name, "lz"); } },
		{ "component grown",
		  [](coh_map &x, const two_groups &y) {
			  x.volumes[y.lc].blocks = 128;
			  x.volumes[y.vc].blocks += 32;
		  } },
		{ "stripe",
		  [](coh_map &x, const two_groups &y) { x.volumes[y.vs].stripe_blocks = 32; } },
		{ "AMFs", [](coh_map &x, const two_groups &y) { x.groups[y.gb].amfs = 0x7; } },
		{ "group size",
		  [](coh_map &x, const two_groups &y) { x.groups[y.ga].blocks = 2000; } },
		{ "nodes", [](coh_map &x, const two_groups &) { x.nodes = 4; } },
	};
	for (const bad &b : bads) {
		coh_map x = t.m;

		x.version++;
		b.edit(x, t);
		ASSERT_EQ(coh_map_check(&x, err, sizeof(err)), 0) << b.what << ": " << err;
		EXPECT_EQ(coh_map_compatible(&t.m, &x, err, sizeof(err)), -EINVAL) << b.what;
		EXPECT_NE(err[0], 0) << b.what;
	}
	// A preferred AMF may change online.
	coh_map x = t.m;
	x.version++;
	x.groups[t.gb].preferred = 1;
	EXPECT_EQ(coh_map_compatible(&t.m, &x, err, sizeof(err)), 0) << err;
}

TEST(map, target_is_this_controller_then_the_holder_then_the_preferred)
{
	two_groups t;
	uint32_t to = 99;

	// On group A (nodes 0-1): node 0 and node 1 execute their own commands.
	ASSERT_EQ(coh_map_target(&t.m, t.la, 0, 0x7, COH_MAP_NO_NODE, &to), 0);
	EXPECT_EQ(to, 0u);
	ASSERT_EQ(coh_map_target(&t.m, t.la, 1, 0x7, COH_MAP_NO_NODE, &to), 0);
	EXPECT_EQ(to, 1u);
	// Node 2 is not cabled to A: the preferred (0), or node 1 when it holds the lock.
	ASSERT_EQ(coh_map_target(&t.m, t.la, 2, 0x7, COH_MAP_NO_NODE, &to), 0);
	EXPECT_EQ(to, 0u);
	ASSERT_EQ(coh_map_target(&t.m, t.la, 2, 0x7, 1, &to), 0);
	EXPECT_EQ(to, 1u);
	// A holder that is not an AMF (or is dead) is not a target.
	ASSERT_EQ(coh_map_target(&t.m, t.la, 2, 0x7, 2, &to), 0);
	EXPECT_EQ(to, 0u);
	ASSERT_EQ(coh_map_target(&t.m, t.la, 2, 0x6, 0, &to), 0);
	EXPECT_EQ(to, 1u);
	// Group B's preferred is 2; with 2 dead, node 0 goes to 1.
	ASSERT_EQ(coh_map_target(&t.m, t.lb, 0, 0x7, COH_MAP_NO_NODE, &to), 0);
	EXPECT_EQ(to, 2u);
	ASSERT_EQ(coh_map_target(&t.m, t.lb, 0, 0x3, COH_MAP_NO_NODE, &to), 0);
	EXPECT_EQ(to, 1u);
	EXPECT_EQ(coh_map_target(&t.m, t.lb, 0, 0x1, COH_MAP_NO_NODE, &to), -EHOSTDOWN);
	EXPECT_EQ(coh_map_target(&t.m, t.vs, 0, 0x7, COH_MAP_NO_NODE, &to), -EINVAL);
	EXPECT_EQ(coh_map_target(&t.m, 99, 0, 0x7, COH_MAP_NO_NODE, &to), -EINVAL);
}

// ref_block - where host block @h of volume @v lives, computed one block at a time.
std::pair<uint32_t, uint64_t> ref_block(const coh_map &m, uint32_t v, uint64_t h)
{
	const coh_map_volume &vo = m.volumes[v];

	if (vo.kind == COH_MAP_LOGICAL)
		return { v, h };
	if (vo.layout == COH_MAP_CONCAT) {
		for (uint32_t i = 0; i < vo.ncomp; i++) {
			if (h < m.volumes[vo.comp[i]].blocks)
				return { vo.comp[i], h };
			h -= m.volumes[vo.comp[i]].blocks;
		}
		return { UINT32_MAX, 0 };
	}
	uint64_t chunk = h / vo.stripe_blocks;

	return { vo.comp[chunk % vo.ncomp],
		 chunk / vo.ncomp * vo.stripe_blocks + h % vo.stripe_blocks };
}

TEST(map, split_matches_a_block_by_block_reference)
{
	two_groups t;
	std::mt19937_64 rng(16);
	std::vector<coh_map_comp> comps(COH_MAP_MAX_COMPONENTS);
	std::vector<coh_map_piece> pieces(128);
	uint32_t nc, np, vols[] = { t.la, t.lb, t.vs, t.vc };

	for (int iter = 0; iter < 3000; iter++) {
		uint32_t v = vols[iter % 4];
		uint64_t size = t.m.volumes[v].blocks;
		uint64_t lba = rng() % size;
		uint32_t n = (uint32_t)(1 + rng() % (size - lba < 80 ? size - lba : 80));
		std::vector<int> seen(n, 0);

		ASSERT_EQ(coh_map_split(&t.m, v, lba, n, comps.data(), (uint32_t)comps.size(), &nc,
					pieces.data(), (uint32_t)pieces.size(), &np),
			  0);
		ASSERT_LE(np, coh_map_split_pieces(&t.m, v, n));
		for (uint32_t c = 0; c < nc; c++) {
			const coh_map_comp &k = comps[c];
			uint64_t j = 0;

			if (c)
				EXPECT_LT(pieces[comps[c - 1].first_piece].host_block,
					  pieces[k.first_piece].host_block);
			EXPECT_EQ(k.group, t.m.volumes[k.volume].group);
			EXPECT_EQ(k.group_block, t.m.volumes[k.volume].first_block + k.lba);
			for (uint32_t p = 0; p < k.npieces; p++) {
				const coh_map_piece &pc = pieces[k.first_piece + p];

				for (uint32_t b = 0; b < pc.nblocks; b++, j++) {
					auto want = ref_block(t.m, v, lba + pc.host_block + b);

					ASSERT_LT(pc.host_block + b, n);
					seen[pc.host_block + b]++;
					ASSERT_EQ(want.first, k.volume)
					    << "lba " << lba << " n " << n;
					ASSERT_EQ(want.second, k.lba + j)
					    << "lba " << lba << " n " << n;
				}
			}
			EXPECT_EQ(j, k.nblocks);
		}
		for (uint32_t b = 0; b < n; b++)
			ASSERT_EQ(seen[b], 1) << "host block " << b << " of " << lba << "+" << n;
	}
	EXPECT_EQ(coh_map_split(&t.m, t.vs, 500, 13, comps.data(), 8, &nc, pieces.data(), 128, &np),
		  -EINVAL);
	EXPECT_EQ(coh_map_split(&t.m, t.vs, 0, 0, comps.data(), 8, &nc, pieces.data(), 128, &np),
		  -EINVAL);
	EXPECT_EQ(coh_map_split(&t.m, t.vs, 0, 64, comps.data(), 1, &nc, pieces.data(), 128, &np),
		  -EOVERFLOW);
	EXPECT_EQ(coh_map_split(&t.m, t.vs, 0, 64, comps.data(), 8, &nc, pieces.data(), 3, &np),
		  -EOVERFLOW);
}

TEST(map, aggregate_is_the_error_of_the_lowest_failing_block)
{
	two_groups t;
	coh_map_comp comps[8];
	coh_map_piece pieces[16];
	coh_map_result res[2];
	coh_map_status st;
	uint32_t nc, np;

	// 64 blocks from block 8 of the stripe: la has host blocks 0-7, 24-39, 56-63; lb has
	// 8-23 and 40-55.
	ASSERT_EQ(coh_map_split(&t.m, t.vs, 8, 64, comps, 8, &nc, pieces, 16, &np), 0);
	ASSERT_EQ(nc, 2u);
	ASSERT_EQ(comps[0].volume, t.la);
	ASSERT_EQ(comps[1].volume, t.lb);

	memset(res, 0, sizeof(res));
	coh_map_aggregate(comps, pieces, nc, 64, res, &st);
	EXPECT_EQ(st.status, 0);
	EXPECT_EQ(st.comp, -1);
	EXPECT_EQ(st.good, 64u);

	res[1] = { -EIO, 0 };
	coh_map_aggregate(comps, pieces, nc, 64, res, &st);
	EXPECT_EQ(st.status, -EIO);
	EXPECT_EQ(st.comp, 1);
	EXPECT_EQ(st.fail_block, 8u);
	EXPECT_EQ(st.good, 8u);

	res[0] = { -ENOSPC, 10 }; // la's tenth block is host block 26
	res[1] = { -EIO, 3 };	  // lb's third is host block 11: lower
	coh_map_aggregate(comps, pieces, nc, 64, res, &st);
	EXPECT_EQ(st.status, -EIO);
	EXPECT_EQ(st.fail_block, 11u);

	res[1] = { -EIO, 20 }; // host block 44: now la's 26 is the lowest
	coh_map_aggregate(comps, pieces, nc, 64, res, &st);
	EXPECT_EQ(st.status, -ENOSPC);
	EXPECT_EQ(st.comp, 0);
	EXPECT_EQ(st.fail_block, 26u);
	EXPECT_EQ(st.good, 26u);

	res[0] = { -ENOSPC, 1000 }; // a count past the component: taken as nothing done
	coh_map_aggregate(comps, pieces, nc, 64, res, &st);
	EXPECT_EQ(st.fail_block, 0u);
	EXPECT_EQ(st.good, 0u);
}

// A request and what its callback saw.
struct waiter {
	coh_coord_req req;
	std::atomic<int> calls{ 0 };
	std::atomic<int> status{ 1 };

	waiter(uint64_t lba, uint32_t n)
	{
		memset(&req, 0, sizeof(req));
		req.lba = lba;
		req.nblocks = n;
		req.arg = this;
		req.granted = [](coh_coord_req *r, int s) {
			waiter *w = static_cast<waiter *>(r->arg);

			w->status = s;
			w->calls++;
		};
	}
};

constexpr uint64_t far_deadline = UINT64_MAX;

TEST(coord, overlapping_requests_wait_and_are_granted_in_order)
{
	coh_coord *c = nullptr;
	waiter a(0, 10), b(5, 10), cc(20, 10), d(12, 10);

	ASSERT_EQ(coh_coord_new(16, 16, &c), 0);
	EXPECT_EQ(coh_coord_request(c, &a.req, far_deadline), 0);
	EXPECT_EQ(coh_coord_request(c, &b.req, far_deadline), -EINPROGRESS);
	EXPECT_EQ(coh_coord_request(c, &cc.req, far_deadline), 0);
	EXPECT_EQ(coh_coord_request(c, &d.req, far_deadline), -EINPROGRESS); // b and cc
	ASSERT_EQ(coh_coord_release(c, &a.req), 0);
	EXPECT_EQ(b.calls, 1);
	EXPECT_EQ(b.status, 0);
	EXPECT_EQ(d.calls, 0);
	ASSERT_EQ(coh_coord_release(c, &cc.req), 0);
	EXPECT_EQ(d.calls, 0); // still b's
	ASSERT_EQ(coh_coord_release(c, &b.req), 0);
	EXPECT_EQ(d.calls, 1);
	EXPECT_EQ(d.status, 0);
	EXPECT_EQ(coh_coord_release(c, &b.req), -EINVAL); // not granted any more
	ASSERT_EQ(coh_coord_release(c, &d.req), 0);

	struct coh_coord_stats st;
	coh_coord_stats(c, &st);
	EXPECT_EQ(st.granted_now, 0u);
	EXPECT_EQ(st.held_now, 0u);
	EXPECT_EQ(st.grants, 4u);
	EXPECT_EQ(st.holds, 2u);
	coh_coord_delete(&c);
	EXPECT_EQ(c, nullptr);
}

TEST(coord, a_held_request_is_not_starved_by_later_small_ones)
{
	coh_coord *c = nullptr;
	waiter first(0, 1), big(0, 100), small1(50, 1), small2(99, 1), clear(100, 1);

	ASSERT_EQ(coh_coord_new(16, 16, &c), 0);
	ASSERT_EQ(coh_coord_request(c, &first.req, far_deadline), 0);
	ASSERT_EQ(coh_coord_request(c, &big.req, far_deadline), -EINPROGRESS);
	// Free ranges, but behind the held big one: they wait.
	EXPECT_EQ(coh_coord_request(c, &small1.req, far_deadline), -EINPROGRESS);
	EXPECT_EQ(coh_coord_request(c, &small2.req, far_deadline), -EINPROGRESS);
	// Overlapping nothing held or reserved: granted.
	EXPECT_EQ(coh_coord_request(c, &clear.req, far_deadline), 0);
	ASSERT_EQ(coh_coord_release(c, &first.req), 0);
	EXPECT_EQ(big.calls, 1);
	EXPECT_EQ(small1.calls + small2.calls, 0);
	ASSERT_EQ(coh_coord_release(c, &big.req), 0);
	EXPECT_EQ(small1.calls, 1);
	EXPECT_EQ(small2.calls, 1);
	coh_coord_delete(&c);
}

TEST(coord, waits_are_bounded_and_each_callback_runs_once)
{
	coh_coord *c = nullptr;
	waiter a(0, 10), b(0, 10), d(30, 5), e(9, 30);

	ASSERT_EQ(coh_coord_new(16, 16, &c), 0);
	ASSERT_EQ(coh_coord_request(c, &a.req, far_deadline), 0);
	ASSERT_EQ(coh_coord_request(c, &d.req, far_deadline), 0);
	ASSERT_EQ(coh_coord_request(c, &e.req, 100), -EINPROGRESS); // a and d
	ASSERT_EQ(coh_coord_request(c, &b.req, 200), -EINPROGRESS); // a and e
	EXPECT_EQ(coh_coord_expire(c, 99), 0u);
	EXPECT_EQ(coh_coord_release(c, &d.req), 0);
	EXPECT_EQ(e.calls, 0);
	EXPECT_EQ(coh_coord_expire(c, 100), 1u);
	EXPECT_EQ(e.calls, 1);
	EXPECT_EQ(e.status, -ETIMEDOUT);
	EXPECT_EQ(b.calls, 0); // a still holds
	EXPECT_EQ(coh_coord_expire(c, 1000), 1u);
	EXPECT_EQ(b.status, -ETIMEDOUT);
	EXPECT_EQ(coh_coord_expire(c, 2000), 0u);
	EXPECT_EQ(e.calls, 1);
	EXPECT_EQ(b.calls, 1);
	// An expired request can ask again.
	ASSERT_EQ(coh_coord_request(c, &b.req, far_deadline), -EINPROGRESS);
	ASSERT_EQ(coh_coord_release(c, &a.req), 0);
	EXPECT_EQ(b.calls, 2);
	EXPECT_EQ(b.status, 0);
	struct coh_coord_stats st;
	coh_coord_stats(c, &st);
	EXPECT_EQ(st.expired, 2u);
	coh_coord_delete(&c);
}

TEST(coord, full_tables_push_back_and_bad_requests_are_refused)
{
	coh_coord *c = nullptr;
	waiter a(0, 1), b(1, 1), x(2, 1), h(0, 2), h2(0, 3), zero(5, 0);

	EXPECT_EQ(coh_coord_new(0, 1, &c), -EINVAL);
	EXPECT_EQ(coh_coord_new(1, 70000, &c), -EINVAL);
	ASSERT_EQ(coh_coord_new(2, 1, &c), 0);
	ASSERT_EQ(coh_coord_request(c, &a.req, far_deadline), 0);
	ASSERT_EQ(coh_coord_request(c, &b.req, far_deadline), 0);
	// Two ranges reserved, the most: a free range waits for one to go.
	EXPECT_EQ(coh_coord_request(c, &x.req, far_deadline), -EINPROGRESS);
	EXPECT_EQ(coh_coord_request(c, &h.req, far_deadline), -EBUSY);	// one held, the most
	EXPECT_EQ(coh_coord_request(c, &x.req, far_deadline), -EINVAL); // already in
	EXPECT_EQ(coh_coord_request(c, &a.req, far_deadline), -EINVAL);
	EXPECT_EQ(coh_coord_request(c, &zero.req, far_deadline), -EINVAL);
	waiter nocb(9, 1);
	nocb.req.granted = nullptr;
	EXPECT_EQ(coh_coord_request(c, &nocb.req, far_deadline), -EINVAL);
	waiter wrap(UINT64_MAX - 1, 4);
	EXPECT_EQ(coh_coord_request(c, &wrap.req, far_deadline), -EINVAL);
	EXPECT_EQ(coh_coord_release(c, &x.req), -EINVAL); // held, not granted
	ASSERT_EQ(coh_coord_release(c, &b.req), 0);
	EXPECT_EQ(x.calls, 1);
	EXPECT_EQ(x.status, 0);
	EXPECT_EQ(coh_coord_request(c, &h.req, far_deadline), -EINPROGRESS); // a holds 0
	EXPECT_EQ(coh_coord_request(c, &h2.req, far_deadline), -EBUSY);
	// Deleting the table fails what it holds, and forgets what it granted.
	coh_coord_delete(&c);
	EXPECT_EQ(h.calls, 1);
	EXPECT_EQ(h.status, -ESHUTDOWN);
	EXPECT_EQ(h2.calls, 0);
	EXPECT_EQ(x.calls, 1);
	EXPECT_EQ(a.calls, 0);
}

// Two elements (think: two groups under a striped virtual volume), each of which applies a
// component write atomically under its own lock, as a group's coherent cache does. A host write
// over both is two component writes; the coordination table is what keeps another write or a
// read from coming between them.
struct two_elements {
	static constexpr uint32_t blocks = 64; // virtual blocks; even ones on element 0
	std::mutex mu[2];
	uint64_t stamp[2][blocks / 2] = {};

	void write(uint32_t e, uint64_t lba, uint32_t n, uint64_t s)
	{
		std::lock_guard<std::mutex> g(mu[e]);
		for (uint64_t b = lba; b < lba + n; b++)
			if (b % 2 == e)
				stamp[e][b / 2] = s;
	}
	void read(uint32_t e, uint64_t lba, uint32_t n, std::vector<uint64_t> &out)
	{
		std::lock_guard<std::mutex> g(mu[e]);
		for (uint64_t b = lba; b < lba + n; b++)
			if (b % 2 == e)
				out[b - lba] = stamp[e][b / 2];
	}
};

uint64_t now_ns()
{
	return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
		   std::chrono::steady_clock::now().time_since_epoch())
	    .count();
}

// grant_wait - ask for @w's range and wait for its grant: false on a refusal or when the
// table's bound (10 s, applied by coh_coord_expire as the wait goes on) runs out.
bool grant_wait(coh_coord *c, waiter &w)
{
	static std::mutex mu;
	static std::condition_variable cv;
	int before = w.calls, ret, slice;

	w.req.granted = [](coh_coord_req *r, int s) {
		waiter *x = static_cast<waiter *>(r->arg);
		std::lock_guard<std::mutex> g(mu);

		x->status = s;
		x->calls++;
		cv.notify_all();
	};
	ret = coh_coord_request(c, &w.req, now_ns() + 10000000000ull);
	if (ret == 0)
		return true;
	if (ret != -EINPROGRESS)
		return false;
	for (slice = 0; slice < 300; slice++) { // 100 ms each: past the 10 s bound
		{
			std::unique_lock<std::mutex> l(mu);
			if (cv.wait_for(l, std::chrono::milliseconds(100),
					[&] { return w.calls > before; }))
				return w.status == 0;
		}
		coh_coord_expire(c, now_ns());
	}
	ADD_FAILURE() << "a held request was neither granted nor expired";
	abort(); // the table still points at @w
}

TEST(coord, overlapping_writes_over_two_elements_apply_whole)
{
	constexpr int writers = 4, readers = 2, ops = 400;
	two_elements el;
	coh_coord *c = nullptr;
	std::atomic<uint64_t> next_stamp{ 1 };
	std::atomic<int> torn{ 0 }, failed{ 0 };
	std::mutex log_mu;
	std::vector<std::pair<uint64_t, uint32_t>> range_of(writers * ops + 1); // stamp -> range
	std::vector<std::thread> th;

	ASSERT_EQ(coh_coord_new(64, 64, &c), 0);
	for (int t = 0; t < writers; t++)
		th.emplace_back([&, t] {
			std::mt19937_64 rng(100 + t);

			for (int i = 0; i < ops; i++) {
				uint64_t lba = rng() % (two_elements::blocks - 1);
				uint32_t n =
				    (uint32_t)(2 + rng() % (two_elements::blocks - lba - 1));
				waiter w(lba, n);

				if (!grant_wait(c, w)) {
					failed++;
					return;
				}
				uint64_t s = next_stamp++;
				{
					std::lock_guard<std::mutex> g(log_mu);
					range_of[s] = { lba, n };
				}
				el.write(0, lba, n, s);
				std::this_thread::yield(); // the window a torn write falls in
				el.write(1, lba, n, s);
				if (coh_coord_release(c, &w.req))
					failed++;
			}
		});
	for (int t = 0; t < readers; t++)
		th.emplace_back([&, t] {
			std::mt19937_64 rng(200 + t);

			for (int i = 0; i < ops; i++) {
				uint64_t lba = rng() % (two_elements::blocks - 1);
				uint32_t n =
				    (uint32_t)(2 + rng() % (two_elements::blocks - lba - 1));
				std::vector<uint64_t> got(n);
				waiter w(lba, n);

				if (!grant_wait(c, w)) {
					failed++;
					return;
				}
				el.read(0, lba, n, got);
				std::this_thread::yield();
				el.read(1, lba, n, got);
				if (coh_coord_release(c, &w.req))
					failed++;
				// Every write seen here must be seen on all of its blocks in the range
				// (or overwritten there by a later one).
				std::lock_guard<std::mutex> g(log_mu);
				for (uint64_t s : got) {
					if (!s)
						continue;
					auto r = range_of[s];
					for (uint64_t b = std::max(r.first, lba);
					     b < std::min(r.first + r.second, lba + n); b++)
						if (got[b - lba] < s)
							torn++;
				}
			}
		});
	for (auto &x : th)
		x.join();
	EXPECT_EQ(failed, 0);
	EXPECT_EQ(torn, 0);
	// Each block ends with the last write (by stamp, which is the order overlapping writes
	// were granted in) that covered it.
	for (uint64_t b = 0; b < two_elements::blocks; b++) {
		uint64_t want = 0;

		for (uint64_t s = 1; s < next_stamp; s++)
			if (range_of[s].first <= b && b < range_of[s].first + range_of[s].second)
				want = s;
		EXPECT_EQ(el.stamp[b % 2][b / 2], want) << "block " << b;
	}
	coh_coord_delete(&c);
}
} // namespace
