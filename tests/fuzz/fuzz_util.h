// Helpers shared by the fuzz targets (tests/fuzz).
#ifndef NVFP4_TESTS_FUZZ_FUZZ_UTIL_H_
#define NVFP4_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>

// Aborts (a crash for libFuzzer) when an invariant does not hold.
#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

#endif  // NVFP4_TESTS_FUZZ_FUZZ_UTIL_H_
