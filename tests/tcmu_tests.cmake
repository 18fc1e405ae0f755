# The TCMU front end (engine/scsi/tcmu*.c, issue 15): the ring on memory laid out as the kernel
# lays it out (label unit) and its parser's fuzz target. On the real kernel it runs in cohortd
# (scripts/rig-frontend.sh, inside the VM rig).
add_executable(tcmu_ring_test tcmu_ring_test.cc tcmu_ring_shim.c)
target_include_directories(tcmu_ring_test PRIVATE ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_options(tcmu_ring_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(tcmu_ring_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
add_test(NAME unit_tcmu_ring COMMAND tcmu_ring_test)
set_tests_properties(unit_tcmu_ring PROPERTIES LABELS unit TIMEOUT 120)

add_executable(fuzz_tcmu_driver fuzz_tcmu.c fuzz_driver.c)
target_include_directories(fuzz_tcmu_driver PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_options(fuzz_tcmu_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_tcmu_driver PRIVATE cohort_static)
add_test(NAME fuzz_tcmu_bounded COMMAND fuzz_tcmu_driver 300000)
set_tests_properties(fuzz_tcmu_bounded PROPERTIES LABELS unit TIMEOUT 300)

if(COHORT_FUZZ)
  add_executable(fuzz_tcmu fuzz_tcmu.c)
  target_include_directories(fuzz_tcmu PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_tcmu PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_tcmu PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_tcmu PRIVATE cohort_static)
  add_test(NAME fuzz_tcmu_libfuzzer COMMAND fuzz_tcmu -runs=1000000 -max_len=1100)
  set_tests_properties(fuzz_tcmu_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
endif()
