/* oom_shim.h - fail the n-th calloc after oom_arm(n); oom_disarm() returns how many were made. */
#ifndef COHORT_TESTS_OOM_SHIM_H
#define COHORT_TESTS_OOM_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
void oom_arm(long nth);
long oom_disarm(void);
#ifdef __cplusplus
}
#endif
#endif
