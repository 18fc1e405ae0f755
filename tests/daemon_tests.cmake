# cohortd and cohortctl (issue 15): the config parser (label unit), three real daemons on shm
# (label frontend), and the config parser's fuzz target.
add_executable(daemon_test daemon_test.cc daemon_cluster.c)
target_compile_options(daemon_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_compile_definitions(daemon_test PRIVATE COHORT_BIN_DIR="${CMAKE_BINARY_DIR}/bin"
  COHORT_DAEMON_EXAMPLE="${PROJECT_SOURCE_DIR}/docs/examples/cohort-3node-shm.conf"
  COHORT_ROUTED_EXAMPLE="${PROJECT_SOURCE_DIR}/docs/examples/cohort-routed-shm.conf")
target_link_libraries(daemon_test PRIVATE cohort_daemon GTest::gtest GTest::gtest_main)
add_dependencies(daemon_test cohortd cohortctl)
add_test(NAME unit_daemon_conf COMMAND daemon_test --gtest_filter=conf.*)
set_tests_properties(unit_daemon_conf PROPERTIES LABELS unit TIMEOUT 60)
add_test(NAME daemon_shm COMMAND daemon_test --gtest_filter=daemon.*)
set_tests_properties(daemon_shm PROPERTIES LABELS frontend TIMEOUT 600)

add_executable(fuzz_conf_driver fuzz_conf.c fuzz_driver.c)
target_compile_options(fuzz_conf_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_conf_driver PRIVATE cohort_daemon)
add_test(NAME fuzz_conf_bounded COMMAND fuzz_conf_driver 1000000)
set_tests_properties(fuzz_conf_bounded PROPERTIES LABELS unit TIMEOUT 300)

if(COHORT_FUZZ)
  add_executable(fuzz_conf fuzz_conf.c)
  target_compile_options(fuzz_conf PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_conf PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_conf PRIVATE cohort_daemon)
  add_test(NAME fuzz_conf_libfuzzer COMMAND fuzz_conf -runs=1000000 -max_len=2000)
  set_tests_properties(fuzz_conf_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
endif()

# The control socket's map-change requests (engine/daemon/mapedit.c).
add_executable(fuzz_ctl_driver fuzz_ctl.c fuzz_driver.c)
target_compile_options(fuzz_ctl_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_ctl_driver PRIVATE cohort_daemon)
add_test(NAME fuzz_ctl_bounded COMMAND fuzz_ctl_driver 300000)
set_tests_properties(fuzz_ctl_bounded PROPERTIES LABELS unit TIMEOUT 300)

if(COHORT_FUZZ)
  add_executable(fuzz_ctl fuzz_ctl.c)
  target_compile_options(fuzz_ctl PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_ctl PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_ctl PRIVATE cohort_daemon)
  add_test(NAME fuzz_ctl_libfuzzer COMMAND fuzz_ctl -runs=500000 -max_len=600)
  set_tests_properties(fuzz_ctl_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
endif()
