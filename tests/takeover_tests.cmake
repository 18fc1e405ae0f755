# Crash trials of the engine (label takeover): replication, takeover, recovery.
add_executable(takeover_test takeover_test.cc takeover.c linz.c conf.c
	       ${PROJECT_SOURCE_DIR}/bench/bench_util.c)
target_include_directories(takeover_test PRIVATE ${PROJECT_SOURCE_DIR}/bench)
target_compile_options(takeover_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(takeover_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
# The trials know the version field's width: a narrow build (-DCOHORT_VER_BITS=8) adds long runs
# to its randomized mix, so that versions wrap many times with nodes dying.
target_compile_definitions(takeover_test PRIVATE TK_VER_BITS=${COHORT_VER_BITS})
add_test(NAME takeover_shm COMMAND takeover_test)
# The number of randomized trials comes from COHORT_TAKEOVER_TRIALS (scripts/test.sh: 200).
set_tests_properties(takeover_shm PROPERTIES LABELS takeover TIMEOUT 4000)
if(NOT COHORT_VER_BITS EQUAL 24)
  # In a narrow build the same suite is also labelled narrow: ctest -L narrow.
  set_tests_properties(takeover_shm PROPERTIES LABELS "takeover;narrow")
else()
  # From a normal build, the same trials on 8-bit versions: configures build-narrow beside this
  # tree (as scripts/test.sh and scripts/soak-takeover.sh do), builds takeover_test there and
  # runs it. cmake --build build --target takeover_narrow; COHORT_TAKEOVER_* apply as usual.
  add_custom_target(takeover_narrow
    COMMAND ${CMAKE_COMMAND} -S ${PROJECT_SOURCE_DIR} -B ${PROJECT_SOURCE_DIR}/build-narrow
            -G ${CMAKE_GENERATOR} -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_VER_BITS=8
    COMMAND ${CMAKE_COMMAND} --build ${PROJECT_SOURCE_DIR}/build-narrow --target takeover_test
    COMMAND ${PROJECT_SOURCE_DIR}/build-narrow/bin/takeover_test --gtest_brief=1
    USES_TERMINAL
    COMMENT "takeover trials on 8-bit directory versions (build-narrow)")
endif()

add_executable(rlog_test rlog_test.cc rlog_scenarios.c)
target_include_directories(rlog_test PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_options(rlog_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(rlog_test PRIVATE cohort_conf GTest::gtest GTest::gtest_main)
add_test(NAME unit_rlog COMMAND rlog_test)
set_tests_properties(unit_rlog PROPERTIES LABELS unit TIMEOUT 60)
