# Background destage from a watermark (engine/bgdestage.c): a shm cluster writes more than its
# logs hold, with it on and off, and compares the full-log stalls (label cache).
add_executable(bgdestage_test bgdestage_test.cc bgdestage.c engine_harness.c linz.c conf.c
	${PROJECT_SOURCE_DIR}/bench/bench_util.c)
target_include_directories(bgdestage_test PRIVATE ${PROJECT_SOURCE_DIR}/bench)
target_compile_options(bgdestage_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(bgdestage_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
add_test(NAME bgdestage_shm COMMAND bgdestage_test)
set_tests_properties(bgdestage_shm PROPERTIES LABELS cache TIMEOUT 600)
