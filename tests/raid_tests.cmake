# Redundancy groups (engine/raid.c): RAID-1 and RAID-5 over file stores in /dev/shm. Allocation
# and lock set-up failures are injected by wrapping the library's calls (see raid_test.cc).
add_executable(raid_test raid_test.cc)
target_link_libraries(raid_test PRIVATE cohort_static GTest::gtest GTest::gtest_main)
target_link_options(raid_test PRIVATE
  -Wl,--wrap=calloc -Wl,--wrap=posix_memalign -Wl,--wrap=pthread_rwlock_init)
add_test(NAME unit_raid COMMAND raid_test)
set_tests_properties(unit_raid PROPERTIES LABELS unit TIMEOUT 300)
