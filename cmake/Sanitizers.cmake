# Sanitizer and fuzzing builds (docs/FUZZING.md). Included by the top-level CMakeLists.txt after
# nvfp4_copts is defined and before any project target, so the flags reach every target of the
# project (generated protobuf code included).
#
#   NVFP4_SANITIZE="address,undefined"  -fsanitize=<list> on every C/C++ compile and link, with
#                                        -fno-sanitize-recover=all (the first report fails the test)
#                                        and frame pointers for readable stacks. Use with CUDA off.
#   NVFP4_FUZZ=ON                        libFuzzer targets in tests/fuzz (clang only): every object is
#                                        built with -fsanitize=fuzzer-no-link (coverage), the fuzz
#                                        executables link -fsanitize=fuzzer. Combine with
#                                        NVFP4_SANITIZE=address,undefined.
#
# tests/fuzz is always added (with tests or fuzzing on): without NVFP4_FUZZ
# its targets are built with a small replay driver and the checked-in corpora run as CTest tests
# (label "fuzz"), so every build replays them, sanitized builds included.
set(NVFP4_SANITIZE "" CACHE STRING
    "Comma-separated -fsanitize= list for all project targets (e.g. address,undefined); empty: off")
option(NVFP4_FUZZ "Build the libFuzzer targets in tests/fuzz (clang; see docs/FUZZING.md)" OFF)

set(_nvfp4_san_flags "")
if(NVFP4_SANITIZE)
  list(APPEND _nvfp4_san_flags -fsanitize=${NVFP4_SANITIZE} -fno-sanitize-recover=all
       -fno-omit-frame-pointer)
  # GCC's -Wmaybe-uninitialized reports false positives in libstdc++ (<regex>, std::function) when
  # sanitizer instrumentation changes inlining; the project builds with -Werror.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND _nvfp4_san_flags -Wno-maybe-uninitialized)
  endif()
  if(NVFP4_HAVE_CUDA)
    message(WARNING "nvfp4: NVFP4_SANITIZE with the CUDA backend is untested; configure with "
                    "-DNVFP4_ENABLE_CUDA=OFF")
  endif()
endif()
if(NVFP4_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "nvfp4: NVFP4_FUZZ needs clang (CC=clang CXX=clang++)")
  endif()
  list(APPEND _nvfp4_san_flags -fsanitize=fuzzer-no-link)
endif()
if(_nvfp4_san_flags)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_nvfp4_san_flags}>")
  add_link_options("$<$<LINK_LANGUAGE:C,CXX>:${_nvfp4_san_flags}>")
  message(STATUS "nvfp4: sanitizer/fuzz flags ${_nvfp4_san_flags}")
endif()

if(NVFP4_BUILD_TESTS OR NVFP4_FUZZ)
  # Added here, before the libraries it links exist: CMake resolves target names at generate time.
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/fuzz ${PROJECT_BINARY_DIR}/tests/fuzz)
endif()
