// unit_oom_test.cc - every allocation on the way to a working endpoint fails once in turn; each
// failure must come back as -ENOMEM with nothing left behind (ASAN's leak check sees the rest).
#include <gtest/gtest.h>

#include <cerrno>

#include "conf.h"
#include "oom_shim.h"

namespace
{

int bring_up(const char *dir)
{
	coh_fabric_attr fa = {};
	coh_fabric *fab = nullptr;
	coh_cq *cq = nullptr;
	coh_mr *mr = nullptr;
	coh_ep *ep = nullptr;
	coh_rmr *rmr = nullptr;
	coh_mr_desc d;
	int ret;

	fa.provider = "shm";
	fa.cluster = dir;
	fa.node_id = 0;
	if ((ret = coh_fabric_open(&fa, &fab)))
		return ret;
	coh_ep_attr ea = {};
	ea.peer = 0;
	if ((ret = coh_cq_new(fab, 256, &cq)))
		goto out;
	ea.send_cq = ea.recv_cq = cq;
	if ((ret = coh_mr_new(fab, 4096, COH_ACCESS_REMOTE_READ, &mr)))
		goto out;
	if ((ret = coh_ep_new(fab, &ea, &ep)))
		goto out;
	coh_mr_export(mr, &d);
	ret = coh_rmr_import(ep, &d, &rmr);
out:
	coh_rmr_delete(&rmr);
	coh_ep_delete(&ep);
	coh_mr_delete(&mr);
	coh_cq_delete(&cq);
	coh_fabric_close(&fab);
	return ret;
}

TEST(oom, every_calloc_on_the_bring_up_path)
{
	char dir[256];
	ASSERT_EQ(0, conf_cluster_new(dir, sizeof(dir), 1));
	int failures = 0;
	long nth;
	for (nth = 0; nth < 1000; nth++) {
		oom_arm(nth);
		int ret = bring_up(dir);
		long made = oom_disarm();
		if (made <= nth) {
			// Fewer allocations than nth: this run had no failure and must have worked.
			EXPECT_EQ(0, ret);
			break;
		}
		EXPECT_EQ(-ENOMEM, ret) << "allocation " << nth;
		failures++;
	}
	EXPECT_LT(nth, 1000);
	EXPECT_GE(failures, 8); // fabric, cq (2), mr, ep (3 + scratch), rmr
	conf_cluster_cleanup(dir);
}

} // namespace
