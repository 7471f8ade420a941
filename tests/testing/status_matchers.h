// gMock matchers for absl::Status and absl::StatusOr<T>.
//
//   EXPECT_THAT(QuantizeModel(...), StatusIs(absl::StatusCode::kCancelled));
//   EXPECT_THAT(ParseShardSpec("4/4"), StatusIs(absl::StatusCode::kInvalidArgument,
//                                               HasSubstr("numbered 0 to 3")));
//   ASSERT_THAT(store->Delete(uri), IsOk());
// A failure prints the whole status (code and message).
#ifndef NVFP4_TESTS_TESTING_STATUS_MATCHERS_H_
#define NVFP4_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace nvfp4::testing {
namespace status_internal {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code, ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename StatusType>
  bool MatchAndExplain(const StatusType& value, ::testing::MatchResultListener* listener) const {
    const absl::Status& s = GetStatus(value);
    *listener << "whose status is " << s;
    if (s.code() != code_) return false;
    ::testing::StringMatchResultListener message_listener;
    const bool ok = message_.MatchAndExplain(std::string(s.message()), &message_listener);
    if (!ok && !message_listener.str().empty()) *listener << ", " << message_listener.str();
    return ok;
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has status code " << absl::StatusCodeToString(code_) << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have status code " << absl::StatusCodeToString(code_)
        << " or has a message that ";
    message_.DescribeNegationTo(os);
  }

 private:
  absl::StatusCode code_;
  ::testing::Matcher<const std::string&> message_;
};

}  // namespace status_internal

// Matches an absl::Status or absl::StatusOr<T> with `code` and a message matching `message`.
inline ::testing::PolymorphicMatcher<status_internal::StatusIsMatcher> StatusIs(
    absl::StatusCode code, ::testing::Matcher<const std::string&> message = ::testing::_) {
  return ::testing::MakePolymorphicMatcher(
      status_internal::StatusIsMatcher(code, std::move(message)));
}

// Matches an OK absl::Status or absl::StatusOr<T>.
inline ::testing::PolymorphicMatcher<status_internal::StatusIsMatcher> IsOk() {
  return StatusIs(absl::StatusCode::kOk);
}

}  // namespace nvfp4::testing

#endif  // NVFP4_TESTS_TESTING_STATUS_MATCHERS_H_
