# Crash trials of the engine (label takeover): replication, takeover, recovery.
add_executable(takeover_test takeover_test.cc takeover.c linz.c conf.c
	       ${PROJECT_SOURCE_DIR}/bench/bench_util.c)
target_include_directories(takeover_test PRIVATE ${PROJECT_SOURCE_DIR}/bench)
target_compile_options(takeover_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(takeover_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
add_test(NAME takeover_shm COMMAND takeover_test)
# The number of randomized trials comes from COHORT_TAKEOVER_TRIALS (scripts/test.sh: 200).
set_tests_properties(takeover_shm PROPERTIES LABELS takeover TIMEOUT 4000)

add_executable(rlog_test rlog_test.cc rlog_scenarios.c)
target_include_directories(rlog_test PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_options(rlog_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(rlog_test PRIVATE cohort_conf GTest::gtest GTest::gtest_main)
add_test(NAME unit_rlog COMMAND rlog_test)
set_tests_properties(unit_rlog PROPERTIES LABELS unit TIMEOUT 60)
