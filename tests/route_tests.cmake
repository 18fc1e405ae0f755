# Routing across groups (engine/route/, issue 16): the mapping table, the split into component
# commands and their aggregate status, conflict detection (label unit); the table decoder's and
# the forwarder's message decoder's fuzz targets.
add_executable(route_test route_test.cc)
target_link_libraries(route_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
add_test(NAME unit_route COMMAND route_test)
set_tests_properties(unit_route PROPERTIES LABELS unit TIMEOUT 300)

# Forwarded commands between controller processes on the fabric harness (shm here, rdma in the
# rig): label fabric.
add_executable(fwd_test fwd_test.cc)
target_link_libraries(fwd_test PRIVATE cohort_conf GTest::gtest GTest::gtest_main)
add_test(NAME fabric_forward COMMAND fwd_test)
set_tests_properties(fabric_forward PROPERTIES LABELS fabric TIMEOUT 600)

# The router on the same harness: forwarding to every group, virtual volumes, conflicts across
# controllers, a target killed (label fabric).
add_executable(router_test router_test.cc linz.c)
target_link_libraries(router_test PRIVATE cohort_conf GTest::gtest GTest::gtest_main)
add_test(NAME fabric_router COMMAND router_test)
set_tests_properties(fabric_router PROPERTIES LABELS fabric TIMEOUT 900)

add_executable(fuzz_route_driver fuzz_route.c fuzz_driver.c)
target_include_directories(fuzz_route_driver PRIVATE ${ISAL_INCLUDE})
target_compile_options(fuzz_route_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_route_driver PRIVATE cohort_static)
add_test(NAME fuzz_route_bounded COMMAND fuzz_route_driver 300000)
set_tests_properties(fuzz_route_bounded PROPERTIES LABELS unit TIMEOUT 300)

add_executable(fuzz_fwd_driver fuzz_fwd.c fuzz_driver.c)
target_include_directories(fuzz_fwd_driver PRIVATE ${PROJECT_SOURCE_DIR}/engine/route)
target_compile_options(fuzz_fwd_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_fwd_driver PRIVATE cohort_static)
add_test(NAME fuzz_fwd_bounded COMMAND fuzz_fwd_driver 300000)
set_tests_properties(fuzz_fwd_bounded PROPERTIES LABELS unit TIMEOUT 300)

if(COHORT_FUZZ)
  add_executable(fuzz_fwd fuzz_fwd.c)
  target_include_directories(fuzz_fwd PRIVATE ${PROJECT_SOURCE_DIR}/engine/route)
  target_compile_options(fuzz_fwd PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_fwd PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_fwd PRIVATE cohort_static)
  add_test(NAME fuzz_fwd_libfuzzer COMMAND fuzz_fwd -runs=500000 -max_len=80)
  set_tests_properties(fuzz_fwd_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
  add_executable(fuzz_route fuzz_route.c)
  target_include_directories(fuzz_route PRIVATE ${ISAL_INCLUDE})
  target_compile_options(fuzz_route PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_route PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_route PRIVATE cohort_static)
  add_test(NAME fuzz_route_libfuzzer COMMAND fuzz_route -runs=500000 -max_len=9400)
  set_tests_properties(fuzz_route_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
endif()
