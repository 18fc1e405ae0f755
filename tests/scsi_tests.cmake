# The SCSI logical unit (engine/scsi/lu.c, issue 15): its commands against the SBC-3/SPC-4 tables
# on a mock block path (label unit), the unit on a real three-node cluster (label frontend, on
# the engine tests' harness), and its CDB parser's fuzz target.
add_executable(scsi_test scsi_test.cc scsi_shim.c scsi_wait.c scsi_engine.c engine_harness.c conf.c
                         ${PROJECT_SOURCE_DIR}/bench/bench_util.c)
target_include_directories(scsi_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/bench)
target_compile_options(scsi_test PRIVATE $<$<COMPILE_LANGUAGE:C>:${COHORT_C_WARNINGS}>)
target_link_libraries(scsi_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
add_test(NAME unit_scsi COMMAND scsi_test --gtest_filter=-scsi_engine.*)
set_tests_properties(unit_scsi PROPERTIES LABELS unit TIMEOUT 120)
add_test(NAME scsi_engine COMMAND scsi_test --gtest_filter=scsi_engine.*)
set_tests_properties(scsi_engine PROPERTIES LABELS frontend TIMEOUT 300)

add_executable(fuzz_scsi_driver fuzz_scsi.c scsi_shim.c scsi_wait.c fuzz_driver.c)
target_include_directories(fuzz_scsi_driver PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_options(fuzz_scsi_driver PRIVATE ${COHORT_C_WARNINGS})
target_link_libraries(fuzz_scsi_driver PRIVATE cohort_static)
add_test(NAME fuzz_scsi_bounded COMMAND fuzz_scsi_driver 300000)
set_tests_properties(fuzz_scsi_bounded PROPERTIES LABELS unit TIMEOUT 300)

if(COHORT_FUZZ)
  add_executable(fuzz_scsi fuzz_scsi.c scsi_shim.c scsi_wait.c)
  target_include_directories(fuzz_scsi PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_options(fuzz_scsi PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_scsi PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_scsi PRIVATE cohort_static)
  add_test(NAME fuzz_scsi_libfuzzer COMMAND fuzz_scsi -runs=1000000 -max_len=600)
  set_tests_properties(fuzz_scsi_libfuzzer PROPERTIES LABELS unit TIMEOUT 600)
endif()
